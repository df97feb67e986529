"""Keep freed memory in the process heap while training on the CPU, so big tensors stop page-faulting.

glibc's ``malloc`` serves a block above its mmap threshold (at most 32 MiB, raised on the fly
only up to that cap) with a fresh ``mmap`` and hands it back to the kernel on ``free``; below it,
heap memory above ``M_TRIM_THRESHOLD`` is returned too. Every training step allocates and frees
the same activations, so every step paid for fresh pages: the kernel zeroes each 4 KiB page on
its first touch. At baseline shapes the fused step of 8 models (activations of 8 × 2,048 × 512
floats, 33.5 MiB) spent ~9 ms on each ReLU of what is 1 ms of arithmetic, and one model's epoch
paid for its larger transfers alike. Measured on 2 cores (AMD EPYC), 8 steps of 8 models
(``benchmarks/RESULTS.md``): fused 7.5 s → 6.0 s, one after another 7.4 s → 5.8–6.6 s.

:func:`keep_freed_memory` turns both off for the process (``mallopt``; what
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=…`` would set at start-up): freed blocks stay in the
heap and the next step reuses them. The price is that the process keeps its peak heap until it
ends, which a training step (a process of its own, or a worker that trains again) reuses anyway.
It is called where CPU training starts, not at import: a process that never trains (the UI, the
daemon, a CLI) keeps glibc's defaults. Elsewhere than glibc it does nothing, and says so once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# glibc's malloc.h parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Freed heap memory kept before any is trimmed: far above a step's working set (mallopt takes an
#: int, so this is the largest value it accepts).
KEEP_BYTES = 2**31 - 1

_done: bool | None = None  # None: not tried; True: in effect; False: not glibc


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it (once per process); whether in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path) if path else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.info("heap: no glibc mallopt here; large CPU tensors keep the allocator's default behaviour")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success.
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    _done = ok
    if ok:
        log.debug("heap: CPU training keeps freed memory in the heap (no mmap per block, no trimming)")
    else:
        log.info("heap: mallopt refused the setting; large CPU tensors are mapped and unmapped per step")
    return ok
