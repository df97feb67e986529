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
  ``/proc/stat``, and uses the cores left free, rounded, at least one.

Overrides, first match wins: the ``threads`` argument, ``PATX_THREADS``, then ``OMP_NUM_THREADS``
(the OpenMP setting users already know; the test suite sets it to 1). The choice is logged at
INFO the first time and whenever it changes, so a run's log says what it trained with.

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

__all__ = ["ThreadChoice", "allowed_cores", "busy_between", "busy_cores", "choose_threads", "cpu_ticks", "sleep_waiting_threads",
           "thread_choice", "use_threads", "THREADS_ENV", "SAMPLE_S"]

log = logging.getLogger(__name__)

#: The environment setting that fixes the thread count (a positive integer).
THREADS_ENV = "PATX_THREADS"
#: Seconds of ``/proc/stat`` sampled to see how busy the allowed cores are: long enough for a few
#: scheduler ticks per core (100 Hz), short beside a training step's seconds.
SAMPLE_S = 0.2

#: Whether ``OMP_WAIT_POLICY`` was in place before torch loaded (None: not decided yet).
_passive_in_time: bool | None = None
#: The last choice logged in this process, so a run's log carries it once rather than per step.
_last_logged: int | None = None


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count and why: ``source`` is ``"argument"``, the environment variable that
    set it, or ``"load"`` (chosen from ``cores`` allowed and ``busy`` of them in use by others)."""

    threads: int
    cores: int
    busy: float | None
    source: str

    def describe(self) -> str:
        if self.source == "load":
            return (f"{self.threads} torch thread(s): {self.cores} core(s) allowed, {self.busy:.2f} busy with other "
                    f"work over {SAMPLE_S:g} s (set {THREADS_ENV} to fix the count)")
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


def busy_cores(sample_s: float = SAMPLE_S) -> float:
    """How many of the allowed cores other work keeps busy, in cores (0 … allowed), measured over
    ``sample_s`` seconds while this thread sleeps. Without ``/proc/stat`` (not Linux): the 1-minute
    load average, capped at the allowed cores; 0 when neither is readable."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        with open("/proc/stat") as f:
            before = cpu_ticks(f.read(), cpus)
        time.sleep(sample_s)
        with open("/proc/stat") as f:
            after = cpu_ticks(f.read(), cpus)
    except (OSError, ValueError):
        try:
            return min(float(os.getloadavg()[0]), float(allowed_cores()))
        except OSError:
            return 0.0
    return busy_between(before, after)


def choose_threads(cores: int, busy: float) -> int:
    """The cores left free by ``busy`` cores of other work, rounded, between 1 and ``cores``.

    Rounding (rather than taking every core that is not fully busy) because a thread placed on a
    core another process holds stalls every op's barrier: one thread too few costs at most its
    share of the work, one too many has cost 9x.
    """
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


def _positive_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r}: expected a positive integer (torch threads)")
    return value


def thread_choice(threads: int | None = None) -> ThreadChoice:
    """The thread count to use now (see the module docstring for the order of the overrides)."""
    cores = allowed_cores()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads}: expected a positive integer")
        return ThreadChoice(threads, cores, None, "argument")
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = _positive_int(name)
        if value is not None:
            return ThreadChoice(value, cores, None, name)
    busy = busy_cores()
    return ThreadChoice(choose_threads(cores, busy), cores, busy, "load")


def use_threads(threads: int | None = None) -> ThreadChoice:
    """Choose the thread count (:func:`thread_choice`) and give it to torch; call it where a step
    starts training or predicting, so the choice sees the load of that moment."""
    global _last_logged
    import torch  # only callers about to train or predict get here

    choice = thread_choice(threads)
    torch.set_num_threads(choice.threads)
    if choice.threads != _last_logged:
        _last_logged = choice.threads
        log.info("%s", choice.describe())
        if _passive_in_time is False and choice.threads > 1:
            log.warning("torch was imported before patx_core, so its waiting threads may spin (set "
                        "OMP_WAIT_POLICY=PASSIVE before Python starts, or import patx_core first)")
    return choice
