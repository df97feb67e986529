"""The torch thread count: the free share of the allowed cores, overridable, logged once; and
waiting OpenMP threads that sleep rather than spin."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from patx_core.model import threads
from tests.cli_entry_points import REPO

STAT_BEFORE = """cpu  300 0 0 300 0 0 0 0 0 0
cpu0 100 0 0 100 0 0 0 0 0 0
cpu1 100 0 0 100 0 0 0 0 0 0
cpu2 100 0 0 100 0 0 0 0 0 0
intr 12345
"""
# Over the sample: cpu0 fully busy (100 user ticks), cpu1 idle (100 idle ticks), cpu2 busy but
# outside the affinity mask in the test that excludes it.
STAT_AFTER = """cpu  500 0 0 400 0 0 0 0 0 0
cpu0 180 0 20 100 0 0 0 0 0 0
cpu1 100 0 0 150 50 0 0 0 0 0
cpu2 200 0 0 100 0 0 0 0 0 0
intr 12399
"""


@pytest.mark.parametrize("cores, busy, runnable, expected", [
    (2, 0.0, 0.0, 2),   # idle: every core
    (2, 0.4, 1.0, 2),   # a little background work still leaves both cores mostly free
    (2, 0.6, 1.0, 1),   # more than half a core taken: one thread fewer, not a stalled barrier
    (2, 1.0, 1.0, 1),   # a competitor on one core
    (2, 2.0, 2.0, 1),   # two competitors (or another training process): still one thread, never zero
    (2, 2.0, 3.9, 1),
    (2, 2.0, 4.0, 2),   # oversubscribed: time is shared per thread, every core is a share
    (8, 3.0, 3.0, 5),
    (1, 0.0, 0.0, 1),
])
def test_threads_are_the_free_cores_rounded_at_least_one_or_all_when_oversubscribed(cores, busy, runnable,
                                                                                     expected):
    assert threads.choose_threads(cores, threads.Load(busy=busy, runnable=runnable)) == expected


def test_the_run_queue_is_read_from_proc_stat():
    assert threads.procs_running(STAT_AFTER + "procs_running 7\nprocs_blocked 0\n") == 7
    with pytest.raises(ValueError, match="procs_running"):
        threads.procs_running(STAT_AFTER)


def test_busy_cores_count_only_the_allowed_cpus_and_treat_iowait_as_idle():
    before, after = threads.cpu_ticks(STAT_BEFORE, {0, 1}), threads.cpu_ticks(STAT_AFTER, {0, 1})
    assert set(after) == {0, 1}
    assert threads.busy_between(before, after) == pytest.approx(1.0, abs=1e-12)
    everything = threads.busy_between(threads.cpu_ticks(STAT_BEFORE), threads.cpu_ticks(STAT_AFTER))
    assert everything == pytest.approx(2.0, abs=1e-12)


def test_the_allowed_cores_are_the_affinity_mask_not_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert threads.allowed_cores() == 1


def test_the_choice_without_overrides_follows_the_measured_load(monkeypatch):
    for name in (threads.THREADS_ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "measure_load", lambda: threads.Load(busy=1.0, runnable=1.0))
    choice = threads.thread_choice()
    assert (choice.threads, choice.cores, choice.load.busy, choice.source) == (1, 2, 1.0, "load")
    monkeypatch.setattr(threads, "measure_load", lambda: threads.Load(busy=0.1, runnable=0.0))
    assert threads.thread_choice().threads == 2


def test_the_argument_then_patx_threads_then_omp_num_threads_override_the_load(monkeypatch):
    def no_sample() -> threads.Load:
        raise AssertionError("an override must not sample the load")

    monkeypatch.setattr(threads, "measure_load", no_sample)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert (threads.thread_choice().threads, threads.thread_choice().source) == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv(threads.THREADS_ENV, "2")
    assert (threads.thread_choice().threads, threads.thread_choice().source) == (2, threads.THREADS_ENV)
    assert (threads.thread_choice(5).threads, threads.thread_choice(5).source) == (5, "argument")


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_patx_threads_fails_naming_the_setting(monkeypatch, value):
    monkeypatch.setenv(threads.THREADS_ENV, value)
    with pytest.raises(ValueError, match=threads.THREADS_ENV):
        threads.thread_choice()


def test_use_threads_sets_torch_and_logs_each_choice_once(caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger=threads.__name__):
            threads.use_threads(2)
            assert torch.get_num_threads() == 2
            threads.use_threads(1)
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    lines = [r.getMessage() for r in caplog.records if r.name == threads.__name__ and r.levelno == logging.INFO]
    assert len(lines) == 2, lines
    assert lines[0].startswith("2 torch thread(s)") and lines[1].startswith("1 torch thread(s)")


@pytest.mark.parametrize("in_time, warnings", [(False, 1), (True, 0)])
def test_more_than_one_thread_with_spinning_waiters_is_warned_about_once_per_process(monkeypatch, caplog, in_time,
                                                                                      warnings):
    monkeypatch.setattr(threads, "_spin_warned", False)
    monkeypatch.setattr(threads, "_passive_in_time", in_time)
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger=threads.__name__):
            threads.use_threads(2)
            threads.use_threads(2)
    finally:
        torch.set_num_threads(before)
    assert sum(r.levelno == logging.WARNING and "may spin" in r.getMessage() for r in caplog.records) == warnings


def _gomp_spin_count(code: str, **env: str) -> str:
    """libgomp's spin count as it reports it when torch loads (``OMP_DISPLAY_ENV``): 0 when waiting
    threads sleep at once, 300000 for its default of spinning first."""
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    full.update(OMP_DISPLAY_ENV="VERBOSE", PYTHONPATH=str(REPO), **env)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    [line] = [x for x in out.stderr.splitlines() if "GOMP_SPINCOUNT" in x]
    return line.split("=")[1].strip().strip("'")


def test_importing_patx_core_before_torch_makes_torchs_openmp_threads_sleep_when_waiting():
    assert _gomp_spin_count("import patx_core, torch") == "0"
    # The measurement can fail: torch loaded first keeps OpenMP's spinning default.
    assert _gomp_spin_count("import torch, patx_core") == "300000"


def test_a_wait_policy_the_user_chose_is_kept():
    assert _gomp_spin_count("import patx_core, torch", OMP_WAIT_POLICY="ACTIVE") != "0"


@pytest.mark.parametrize("step, args", [("train_model", (None,)), ("evaluate_model", (None, None, None)),
                                        ("walk_forward_fold_group", (None, None, []))])
def test_each_pipeline_step_that_trains_or_predicts_chooses_its_threads_before_it_starts(monkeypatch, step,
                                                                                         args):
    from patx_core import pipeline

    class Chosen(Exception):
        pass

    def choose(count: int | None = None) -> threads.ThreadChoice:
        raise Chosen

    monkeypatch.setattr(threads, "use_threads", choose)  # each step calls it through the threads module
    with pytest.raises(Chosen):
        getattr(pipeline, step)(*args)


def test_the_load_is_the_busy_share_between_the_first_and_last_look_and_the_mean_run_queue_of_others(
        monkeypatch):
    import io

    texts = iter([STAT_BEFORE + "procs_running 3\n", STAT_BEFORE + "procs_running 5\n",
                  STAT_AFTER + "procs_running 4\n"])
    monkeypatch.setattr(threads, "open", lambda path: io.StringIO(next(texts)), raising=False)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    load = threads.measure_load(readings=2)
    assert load.busy == pytest.approx(1.0, abs=1e-12)  # cpu0 busy, cpu1 idle; cpu2 is not allowed
    assert load.runnable == pytest.approx(3.0, abs=1e-12)  # (3 + 5 + 4) / 3, less the reader itself
