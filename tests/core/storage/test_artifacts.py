"""Atomic artifact writes: old-or-new, never half; concurrent writers never share a temp path."""

from __future__ import annotations

import os
import tempfile
import threading

import pytest

from patx_core.storage import artifacts
from patx_core.storage.artifacts import atomic_write_bytes, atomic_write_with


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path):
    target = tmp_path / "best_model.pth"
    target.write_bytes(b"old model")

    def broken(buf):
        buf.write(b"half of a new mo")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_with(target, broken)
    assert target.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["best_model.pth"]


def test_an_interrupted_rename_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "evaluation.json"
    target.write_bytes(b"{}")

    def no_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts.os, "replace", no_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b'{"new": 1}')
    assert target.read_bytes() == b"{}"
    assert os.listdir(tmp_path) == ["evaluation.json"]


def test_concurrent_writers_use_distinct_temp_paths(tmp_path, monkeypatch):
    target = tmp_path / "scaler.pkl"
    seen: list[str] = []
    real_mkstemp = tempfile.mkstemp
    barrier = threading.Barrier(8)

    def recording_mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        seen.append(name)
        barrier.wait(timeout=10)  # every writer holds its temp file at the same moment
        return fd, name

    monkeypatch.setattr(artifacts.tempfile, "mkstemp", recording_mkstemp)
    payloads = [f"writer {i}".encode() * 1000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write_bytes, args=(target, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 8
    assert all(os.path.dirname(name) == str(tmp_path) for name in seen), "temp files sit beside the target"
    assert target.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["scaler.pkl"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_a_plain_open_would_give_under_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        written = atomic_write_bytes(tmp_path / "report.md", b"# report\n")
        assert artifacts.current_umask() == umask
    finally:
        os.umask(old)
    assert oct(os.stat(written).st_mode & 0o777) == oct(mode)
