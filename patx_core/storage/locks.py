"""One writer at a time: an exclusive lock file beside what a step reads, changes and publishes.

An ingest of a dataset (its curated store) and the ledger of a cell (a nightly ``score`` run, a
retrain's ``signal_ledger``, a second sensor-started run) each read a file, extend it and publish
it. Two of them at once would each publish their own extension and the last one would win, so
they hold the resource's lock for the whole read-modify-write. An flock underneath
(:class:`filelock.FileLock`): the kernel releases it when a killed holder's process dies.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from patx_core.storage.artifacts import PathLike, as_path, is_local

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive(path: PathLike, *, timeout_s: float, busy: Callable[[float], Exception], what: str) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs; after ``timeout_s`` of waiting for
    another holder, raise ``busy(timeout_s)``. Off the local disk (an object store) there is no
    lock to take: ``what`` is named in a warning that says so."""
    p = as_path(path)
    if not is_local(p):
        logger.warning("%s: %s is not on a local disk, so concurrent runs are not locked out; run one at a time",
                       what, p)
        yield
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(p, timeout=timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise busy(timeout_s) from None
    try:
        yield
    finally:
        lock.release()
