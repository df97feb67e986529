"""CPU training keeps freed memory in the heap: a step's big tensors reuse pages instead of faulting new ones."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.core.model.test_trainer import TINY, cfg, make_data

# A child process, so the setting (process-wide, for good) starts from glibc's defaults: allocate,
# touch and free a 64 MiB tensor (above glibc's largest mmap threshold, 32 MiB) once, then count
# the minor page faults of doing it again.
CHILD = textwrap.dedent("""
    import json, resource, sys, torch
    from patx_core.model.heap import keep_freed_memory
    effect = keep_freed_memory() if sys.argv[1] == "keep" else None
    def touch():
        t = torch.empty(16 * 1024 * 1024)  # 64 MiB of float32
        t.fill_(1.0)
        del t
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch()
    print(json.dumps({"effect": effect, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
""")

#: 64 MiB is 16,384 pages of 4 KiB: faulting it anew costs about that many minor faults.
PAGES = 16 * 1024 * 1024 * 4 // 4096


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and Linux page-fault counts")
def test_a_freed_big_tensor_is_reused_without_new_page_faults() -> None:
    default = _faults("default")
    kept = _faults("keep")
    assert default["faults"] > PAGES // 2, default  # the control: glibc maps and unmaps it each time
    assert kept["effect"] is True
    assert kept["faults"] < PAGES // 20, kept  # reused from the heap (a few faults from the interpreter)


def test_cpu_training_turns_the_setting_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from patx_core.model.trainer import Trainer

    calls: list[bool] = []
    monkeypatch.setattr("patx_core.model.loop.keep_freed_memory", lambda: calls.append(True) or True)
    Trainer(TINY, cfg(max_epochs=1), make_data()).train()
    assert calls == [True]
