"""Which Dagster executor the code location's jobs run on, and how many steps a walk-forward uses.

``PATX_EXECUTOR``: ``in_process`` (the default: one process, no broker), ``multiprocess`` (a
process per step on this box) or ``celery`` (each step a task on a Redis-backed Celery queue,
run by ``dagster-celery`` workers, possibly on other machines). Unset, the code location also
runs on Celery when ``$DAGSTER_HOME/celery.yaml`` exists: copying ``deploy/celery/`` into the
instance home is the other way to switch. The Celery settings are read from that file, else from
``deploy/celery/celery.yaml`` (or ``PATX_CELERY_CONFIG``); the broker URL from
``PATX_CELERY_BROKER`` (default :data:`DEFAULT_BROKER`).

``PATX_FOLD_STEPS``: how many steps a walk-forward's folds are spread over. Default: one per fold
when steps can run side by side (multiprocess, Celery), one for all folds in process (nothing
to spread, and one step lets its folds train together). Results are identical for the same
number of steps, whatever the executor.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import dagster as dg
import yaml

from patx_core.settings.environment import positive_int_env
from patx_core.storage.paths import REPO_ROOT

EXECUTORS = ("in_process", "multiprocess", "celery")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
CELERY_CONFIG = REPO_ROOT / "deploy" / "celery" / "celery.yaml"
#: How long the run waits to reach the broker before failing (seconds).
BROKER_CONNECT_TIMEOUT = 5.0


def executor_kind() -> str:
    """``in_process``, ``multiprocess`` or ``celery`` (see the module docstring)."""
    kind = os.environ.get("PATX_EXECUTOR", "").strip().lower().replace("-", "_")
    if not kind:
        return "celery" if _home_celery_config() is not None else "in_process"
    if kind not in EXECUTORS:
        raise ValueError(f"PATX_EXECUTOR={kind!r}: expected one of {', '.join(EXECUTORS)}")
    return kind


def _home_celery_config() -> Path | None:
    home = os.environ.get("DAGSTER_HOME")
    path = Path(home) / "celery.yaml" if home else None
    return path if path is not None and path.is_file() else None


def celery_config_file() -> Path:
    """The Celery settings file: ``PATX_CELERY_CONFIG``, ``$DAGSTER_HOME/celery.yaml``, or the shipped one."""
    named = os.environ.get("PATX_CELERY_CONFIG")
    return Path(named) if named else (_home_celery_config() or CELERY_CONFIG)


def broker_url() -> str:
    return os.environ.get("PATX_CELERY_BROKER") or DEFAULT_BROKER


def celery_executor_config() -> dict[str, Any]:
    """The ``celery_executor`` config of :func:`celery_config_file`, its ``{env: ...}`` values
    resolved (``PATX_CELERY_BROKER`` falling back to :data:`DEFAULT_BROKER`)."""
    path = celery_config_file()
    config = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("execution", {}).get("config", {})

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"env"}:
            name = value["env"]
            return broker_url() if name == "PATX_CELERY_BROKER" else os.environ.get(name)
        return value

    return {k: resolve(v) for k, v in config.items()}


class BrokerUnreachable(RuntimeError):
    """The Celery broker does not answer: nothing could run, so the run fails at once."""


def require_broker(url: str, timeout: float = BROKER_CONNECT_TIMEOUT) -> None:
    """Raise :class:`BrokerUnreachable` (one line: the URL and how to start one) unless a TCP
    connection to the broker's host and port opens within ``timeout`` seconds."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or (6379 if parts.scheme.startswith("redis") else 5672)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise BrokerUnreachable(
            f"Celery broker {url} is unreachable ({exc.strerror or exc}); start Redis and the workers with "
            f"`make workers`, or point PATX_CELERY_BROKER at a running broker") from None


@contextlib.contextmanager
def one_task_registration() -> Iterator[None]:
    """Around dagster-celery's step submission: it registers its one ``execute_plan`` task on the
    run's Celery app again for every step it queues, the same function under the same name, and
    Celery warns about each re-registration (``DuplicateTaskNameWarning``) into the terminal of
    ``make materialize``. That warning, from that call, says nothing to a user; any other stays."""
    from celery.exceptions import DuplicateTaskNameWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered",
                                category=DuplicateTaskNameWarning)
        yield


def _submit_step(*args: Any) -> Any:
    """dagster-celery's own ``_submit_task`` (queues one step), inside :func:`one_task_registration`."""
    from dagster_celery.executor import _submit_task

    with one_task_registration():
        return _submit_task(*args)


def _patx_celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's ``celery_executor``, checking the broker before the first step is queued
    (without the check, a run with no broker hangs in Celery's connection retries or fails deep
    inside kombu)."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CELERY_CONFIG as SCHEMA, CeleryExecutor

    class CheckedCeleryExecutor(CeleryExecutor):
        def execute(self, plan_context, execution_plan):
            from dagster_celery.core_execution_loop import core_celery_execution_loop

            require_broker(self.broker)
            # CeleryExecutor.execute, with each step submitted through _submit_step
            return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=_submit_step)

    # Built from its config exactly as dagster_celery.celery_executor builds its CeleryExecutor.
    @dg.executor(name="celery", config_schema=SCHEMA, requirements=dg.multiple_process_executor_requirements())
    def checked_celery_executor(init_context):
        config = init_context.executor_config
        return CheckedCeleryExecutor(broker=config.get("broker"), backend=config.get("backend"),
                                     config_source=config.get("config_source"), include=config.get("include"),
                                     retries=RetryMode.from_config(config["retries"]))

    return checked_celery_executor.configured(celery_executor_config(), name="celery")


def resolve_executor() -> dg.ExecutorDefinition:
    """The executor of :func:`executor_kind`."""
    kind = executor_kind()
    if kind == "celery":
        return _patx_celery_executor()
    if kind == "multiprocess":
        return dg.multiprocess_executor
    return dg.in_process_executor


def fold_steps(n_folds: int) -> int:
    """Steps a walk-forward of ``n_folds`` folds is spread over (see the module docstring)."""
    steps = positive_int_env("PATX_FOLD_STEPS", "fold steps")
    if steps is not None:
        return min(steps, n_folds)
    return 1 if executor_kind() == "in_process" else n_folds
