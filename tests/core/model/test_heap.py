"""CPU training keeps freed memory in the heap: a step's big tensors reuse pages instead of faulting new ones."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.core.model.test_trainer import TINY, cfg, make_data

# A child process, so the setting (process-wide, for good) starts from glibc's defaults: while a
# 64 MiB tensor (above glibc's largest mmap threshold, 32 MiB) is alive, how many bytes glibc holds
# in mmapped blocks (mallinfo2's hblkhd). A block served by mmap is unmapped on free and faults
# in fresh pages next step; one served from the heap is reused. (The page faults themselves were
# measured, not pinned here: in a minimal child their count depends on the heap's layout, 0 or
# 3 rounds of 5 faulting with the setting, 5 of 5 without; benchmarks/RESULTS.md has the timings.)
CHILD = textwrap.dedent("""
    import ctypes, ctypes.util, json, sys, torch
    from patx_core.model.heap import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                           "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    effect = keep_freed_memory() if sys.argv[1] == "keep" else None
    before = libc.mallinfo2().hblkhd
    t = torch.ones(16 * 1024 * 1024)  # 64 MiB of float32
    print(json.dumps({"effect": effect, "mmapped": libc.mallinfo2().hblkhd - before}))
""")

BYTES = 64 * 1024 * 1024


def _has_mallinfo2() -> bool:
    """glibc 2.33 or newer (musl and macOS have neither mallopt's mmap setting nor mallinfo2)."""
    import ctypes
    import ctypes.util

    path = ctypes.util.find_library("c")
    try:
        return path is not None and hasattr(ctypes.CDLL(path), "mallinfo2") and hasattr(ctypes.CDLL(path), "mallopt")
    except OSError:
        return False


def _mmapped(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallopt and mallinfo2)")
def test_a_big_tensor_comes_from_the_heap_not_from_its_own_mmap() -> None:
    default = _mmapped("default")
    kept = _mmapped("keep")
    assert default["mmapped"] >= BYTES, default  # the control: glibc maps it apart (and unmaps it on free)
    assert kept["effect"] is True
    assert kept["mmapped"] == 0, kept


def test_cpu_training_turns_the_setting_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from patx_core.model.trainer import Trainer

    calls: list[bool] = []
    monkeypatch.setattr("patx_core.model.loop.keep_freed_memory", lambda: calls.append(True) or True)
    Trainer(TINY, cfg(max_epochs=1), make_data()).train()
    assert calls == [True]
