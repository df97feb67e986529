"""Progress inside a training epoch: a terminal bar, and step counts for an orchestrator's log.

An epoch can take a minute on two loaded cores, so waiting for the epoch line is a long silence.
Both outputs report how many batches of the epoch have been *issued*, a Python integer: no
loss is read, so on CUDA nothing waits for the device (a loss read would be a host sync per
step). The bar exists only when stderr is a terminal (not in CI logs or captured output); the
callback fires at most once per ``interval_s`` seconds, so a log gets a line every ~10 s rather
than one per step.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

#: ``on_progress(epoch, max_epochs, steps_done, steps_total)``: batches issued so far in the epoch.
ProgressCallback = Callable[[int, int, int, int], None]

#: Seconds between two progress callbacks: often enough to show a run is alive, rare enough for a log.
PROGRESS_INTERVAL_S = 10.0


class EpochProgress:
    """One epoch's progress; :meth:`advance` is called after each issued step."""

    def __init__(self, epoch: int, max_epochs: int, steps: int, *, callback: ProgressCallback | None = None,
                 interval_s: float = PROGRESS_INTERVAL_S, bar: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.epoch, self.max_epochs, self.steps = epoch, max_epochs, steps
        self.callback, self.interval_s, self.clock = callback, interval_s, clock
        self._next = clock() + interval_s
        self._bar: Any = None
        if bar if bar is not None else _stderr_is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=steps, desc=f"epoch {epoch}/{max_epochs}", unit="batch", leave=False,
                             file=sys.stderr, dynamic_ncols=True)

    def advance(self, steps_done: int) -> None:
        if self._bar is not None:
            self._bar.update(steps_done - self._bar.n)  # tqdm redraws at most every 0.1 s itself
        if self.callback is not None and steps_done < self.steps:
            now = self.clock()
            if now >= self._next:
                self._next = now + self.interval_s
                self.callback(self.epoch, self.max_epochs, steps_done, self.steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
