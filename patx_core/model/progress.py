"""Progress inside a training epoch: a terminal bar, and step counts for an orchestrator's log.

An epoch can take a minute on two loaded cores, so waiting for the epoch line is a long silence.
Both outputs report how many batches of the epoch have been *issued*, a Python integer: no
loss is read, so on CUDA nothing waits for the device (a loss read would be a host sync per
step). The bar exists only when stderr is a terminal (not in CI logs or captured output); the
callback fires at most once per ``interval_s`` seconds, so a log gets a line every ~10 s rather
than one per step. Models trained together report at epoch ends only, so :class:`Heartbeat`
logs a :class:`ModelsProgress` line (each fold or seed, its epoch and val loss) every ~10 s.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

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


class ModelsProgress:
    """What models trained together have done so far, as one line a :class:`Heartbeat` can log.

    :meth:`on_epoch_end` is a ``train_many`` epoch callback (``(model_index, epoch, metrics)``), so
    the line names each model (``fold 3``, ``seed 7``) with its last finished epoch and val loss.
    """

    def __init__(self, what: str, names: list[str], max_epochs: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.names, self.max_epochs, self.clock = what, names, max_epochs, clock
        self._started = clock()
        self._epochs = [0] * len(names)
        self._val_loss: list[float | None] = [None] * len(names)

    def on_epoch_end(self, k: int, epoch: int, metrics: dict[str, float]) -> None:
        self._epochs[k], self._val_loss[k] = epoch, metrics.get("val_loss")

    def line(self) -> str:
        parts = [f"{name} epoch {e}/{self.max_epochs}" + (f" (val loss {v:.4f})" if v is not None else "")
                 for name, e, v in zip(self.names, self._epochs, self._val_loss)]
        return f"{self.what}: training, {self.clock() - self._started:.0f} s in; " + ", ".join(parts)


class Heartbeat:
    """While open (a context manager), ``emit(describe())`` every ``interval_s`` seconds from a
    daemon thread: work that reports only at epoch ends (K fused models, whose epoch lasts K
    models' time) still says what it is doing every ~10 s. Torch releases the GIL inside its ops,
    so the thread runs while the step computes. ``emit`` defaults to this module's logger at INFO,
    which an orchestrator that manages ``patx_core``'s loggers shows in its run log. ``interval_s``
    defaults to :data:`PROGRESS_INTERVAL_S`."""

    def __init__(self, describe: Callable[[], str], emit: Callable[[str], None] | None = None, *,
                 interval_s: float | None = None) -> None:
        self.describe = describe
        self.interval_s = PROGRESS_INTERVAL_S if interval_s is None else interval_s
        self.emit = emit if emit is not None else (lambda line: log.info("%s", line))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        self._thread = threading.Thread(target=self._run, name="patx-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.emit(self.describe())
