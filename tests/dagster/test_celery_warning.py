"""dagster-celery registers its ``execute_plan`` task again for every step it queues; the
executor's step submission keeps Celery's warning about that out of the user's terminal, and
only that warning."""

from __future__ import annotations

import warnings

import pytest
from celery.exceptions import DuplicateTaskNameWarning


def _one() -> int:
    return 1


def _another() -> int:
    return 2


def test_queuing_a_second_step_registers_the_task_again_without_a_warning():
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    from patx_dagster import executor

    def app():  # type: ignore[no-untyped-def]
        made = make_app({"broker": "memory://", "backend": "cache+memory://"})
        create_task(made)  # the run's first step
        assert "execute_plan" in made.tasks  # queuing it finalizes the app
        return made

    quiet = app()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with executor.one_task_registration():
            create_task(quiet)  # the second, third, … step of a run
            quiet.task(name="other_task")(_one)
            assert "other_task" in quiet.tasks
            quiet.task(name="other_task")(_another)
    duplicates = [str(w.message) for w in seen if issubclass(w.category, DuplicateTaskNameWarning)]
    assert not [m for m in duplicates if "execute_plan" in m], duplicates
    assert [m for m in duplicates if "other_task" in m], "another name still warns"
    with pytest.warns(DuplicateTaskNameWarning, match="execute_plan"):  # what dagster-celery does per step
        create_task(app())
    # the executor's submission goes through it
    import inspect
    assert "one_task_registration" in inspect.getsource(executor._submit_step)
