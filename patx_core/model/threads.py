"""How many threads torch computes with: the cores this process may use that nobody else is using.

On a machine shared with other jobs, torch's default (one intra-op thread per core, waiting
threads spinning) collapses: every op ends at a barrier where a thread whose core another
process holds must wait for its time slice, and the threads spinning at that barrier take CPU
from the very thread they wait for. Measured on 2 cores beside another job: 847 ms per step with 2
threads against 95 ms with 1. Two rules prevent it:

- Waiting threads sleep: ``OMP_WAIT_POLICY=PASSIVE`` (torch's OpenMP, libgomp, reads it once,
  when torch loads, so :func:`sleep_waiting_threads` runs when ``patx_core`` is imported, before
  any of its modules imports torch). A value the user set is kept.
- :func:`use_threads`, called where a step starts training or predicting, counts the cores in
  this process's affinity mask (``os.sched_getaffinity``: a cgroup, ``taskset`` or a batch
  scheduler's share, not the machine's count), measures how busy they are over a short sample of
  ``/proc/stat``, and uses the cores left free, rounded, at least one; every core when they are
  oversubscribed by many runnable threads, where time is shared per thread
  (:func:`choose_threads`).

Overrides, first match wins: the ``threads`` argument, ``PATX_THREADS``, then ``OMP_NUM_THREADS``
(the OpenMP setting users already know; the test suite sets it to 1). Each choice is logged at
INFO, once per step that trains or predicts, so a run's log says what it trained with.

Float results depend on the thread count (reductions are split differently), by rounding only;
set ``PATX_THREADS`` to repeat a run bit for bit on another load.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass

from patx_core.settings.environment import positive_int_env

__all__ = ["Load", "ThreadChoice", "allowed_cores", "busy_between", "choose_threads", "cpu_ticks", "measure_load",
           "procs_running", "sleep_waiting_threads", "thread_choice", "use_threads", "THREADS_ENV", "SAMPLE_S",
           "OVERSUBSCRIBED"]

log = logging.getLogger(__name__)

#: The environment setting that fixes the thread count (a positive integer).
THREADS_ENV = "PATX_THREADS"
#: Seconds of ``/proc/stat`` sampled to see how busy the allowed cores are: long enough for a few
#: scheduler ticks per core (100 Hz), short beside a training step's seconds.
SAMPLE_S = 0.2
#: Looks at the run queue during the sample.
SAMPLE_READINGS = 5
#: Other runnable threads per allowed core from which the cores count as oversubscribed. Measured
#: on 2 cores at load ~10 (other users' jobs), waiting threads asleep: 2 threads 3.4 s per epoch,
#: 1 thread 13.4 s. One job beside us (the runnable count ~1 per core) is the other case.
OVERSUBSCRIBED = 2.0

#: Whether ``OMP_WAIT_POLICY`` was in place before torch loaded (None: not decided yet).
_passive_in_time: bool | None = None
#: Whether this process has warned about spinning waiters (the warning is about the process).
_spin_warned = False


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count and why: ``source`` is ``"argument"``, the environment variable that
    set it, or ``"load"`` (chosen from ``cores`` allowed and the measured ``load``)."""

    threads: int
    cores: int
    load: Load | None
    source: str

    def describe(self) -> str:
        if self.load is not None:
            return (f"{self.threads} torch thread(s): {self.cores} core(s) allowed, {self.load.busy:.2f} busy and "
                    f"{self.load.runnable:.1f} other thread(s) runnable over {SAMPLE_S:g} s (set {THREADS_ENV} to "
                    "fix the count)")
        return f"{self.threads} torch thread(s), set by {self.source} ({self.cores} core(s) allowed)"


def sleep_waiting_threads() -> None:
    """Make OpenMP's waiting threads sleep instead of spin, unless the user chose a policy.

    Has effect only before torch loads (libgomp reads the setting once, at load); records whether
    it was in time, so :func:`use_threads` can warn when it was not.
    """
    global _passive_in_time
    if _passive_in_time is None:  # a policy already set is the user's, in effect whenever torch loaded
        _passive_in_time = "OMP_WAIT_POLICY" in os.environ or "torch" not in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def allowed_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cpu_ticks(stat: str, cpus: set[int] | None = None) -> dict[int, tuple[int, int]]:
    """``{cpu: (busy, total)}`` scheduler ticks from the text of ``/proc/stat``, for the cpus in
    ``cpus`` (all if None); idle and iowait count as not busy."""
    out = {}
    for line in stat.splitlines():
        name, *fields = line.split() or [""]
        if not name.startswith("cpu") or name == "cpu":
            continue
        cpu = int(name[3:])
        if cpus is not None and cpu not in cpus:
            continue
        ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + ticks[4]
        out[cpu] = (sum(ticks) - idle, sum(ticks))
    return out


def busy_between(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """Cores' worth of busy time between two :func:`cpu_ticks` snapshots (0 … number of cpus)."""
    busy = 0.0
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (b1, t1))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


def procs_running(stat: str) -> int:
    """Threads running or ready to run, machine-wide, from the text of ``/proc/stat`` (the reader
    included)."""
    for line in stat.splitlines():
        if line.startswith("procs_running "):
            return int(line.split()[1])
    raise ValueError("/proc/stat has no procs_running line")


@dataclass(frozen=True)
class Load:
    """What other work does on the cores: ``busy`` cores' worth of CPU time on the allowed cpus,
    ``runnable`` other threads running or waiting for a cpu (machine-wide, mean over the sample)."""

    busy: float
    runnable: float


def measure_load(sample_s: float = SAMPLE_S, readings: int = SAMPLE_READINGS) -> Load:
    """:class:`Load` over ``sample_s`` seconds while this thread sleeps (``readings`` looks at the
    run queue, whose length changes by the millisecond). Without ``/proc/stat`` (not Linux): the
    1-minute load average for both; zero when neither is readable."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        stats = []
        for i in range(readings + 1):
            if i:
                time.sleep(sample_s / readings)
            with open("/proc/stat") as f:
                stats.append(f.read())
        busy = busy_between(cpu_ticks(stats[0], cpus), cpu_ticks(stats[-1], cpus))
        runnable = sum(procs_running(t) - 1 for t in stats) / len(stats)  # - 1: this thread, reading
        return Load(busy=busy, runnable=max(0.0, runnable))
    except (OSError, ValueError):
        try:
            avg = float(os.getloadavg()[0])
        except OSError:
            return Load(0.0, 0.0)
        return Load(busy=min(avg, float(allowed_cores())), runnable=avg)


def choose_threads(cores: int, load: Load) -> int:
    """Every allowed core when they are oversubscribed (:data:`OVERSUBSCRIBED`), else the cores left
    free by the busy ones, rounded, between 1 and ``cores``.

    Rounding (rather than taking every core that is not fully busy) because a thread placed on a
    core one other process holds stalls every op's barrier: one thread too few costs at most its
    share of the work, one too many has cost 9x. Oversubscribed cores are the opposite case: the
    scheduler shares their time per thread among many, so each of this process's threads is a
    share, and with waiting threads asleep an extra one costs nothing.
    """
    if load.runnable >= OVERSUBSCRIBED * cores:
        return cores
    return max(1, min(cores, math.floor(cores - load.busy + 0.5)))


def thread_choice(threads: int | None = None) -> ThreadChoice:
    """The thread count to use now (see the module docstring for the order of the overrides)."""
    cores = allowed_cores()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads}: expected a positive integer")
        return ThreadChoice(threads, cores, None, "argument")
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = positive_int_env(name, "torch threads")
        if value is not None:
            return ThreadChoice(value, cores, None, name)
    load = measure_load()
    return ThreadChoice(choose_threads(cores, load), cores, load, "load")


def use_threads(threads: int | None = None) -> ThreadChoice:
    """Choose the thread count (:func:`thread_choice`), give it to torch and log it; call it where a
    step starts training or predicting, so the choice sees the load of that moment and each step's
    log says what it ran with (a long-lived worker process runs many steps, of many runs)."""
    global _spin_warned
    import torch  # only callers about to train or predict get here

    choice = thread_choice(threads)
    torch.set_num_threads(choice.threads)
    log.info("%s", choice.describe())
    if _passive_in_time is False and choice.threads > 1 and not _spin_warned:
        _spin_warned = True
        log.warning("torch was imported before patx_core, so its waiting threads may spin (set "
                    "OMP_WAIT_POLICY=PASSIVE before Python starts, or import patx_core first)")
    return choice
