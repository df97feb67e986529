"""``make ui-stop`` ends every process of a UI started in the background the README's way, against
a real ``dagster dev``: a background job of a script starts with SIGINT ignored, Dagster maps
SIGTERM to SIGINT's disposition, and a SIGTERM to the session then reached nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.tools import free_port

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
START_TIMEOUT_S = 240

pytestmark = [pytest.mark.ui, pytest.mark.slow]


def _session(sid: int) -> dict[int, str]:
    """Every live process of session ``sid``: pid → command line."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out[int(stat.parent.name)] = cmdline
    return out


def _ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_make_ui_stop_ends_every_process_of_a_ui_started_in_the_background(tmp_path):
    if shutil.which("make") is None or not (VENV / "bin" / "dagster").exists():
        pytest.skip("needs make and dagster in the running venv")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "PATX_DATA_DIR": str(tmp_path / "data")}
    make = ["make", "-C", str(REPO), f"VENV={VENV}", f"UI_PORT={port}"]
    if (VENV / ".installed").exists():
        make += ["-o", f"{VENV}/.installed"]  # never reinstall the running venv
    log = tmp_path / "ui.log"
    # the README's way, from a script: a background job there starts with SIGINT ignored (set here
    # explicitly, since whether this shell's own `&` does so depends on how pytest was started)
    started = subprocess.run(["bash", "-c", f"setsid {' '.join(make)} ui > {log} 2>&1 < /dev/null & echo $!"],
                             env=env, check=True, capture_output=True, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    session = int(started.stdout.split()[0])  # setsid became make: its pid is the session's id
    pid_file = tmp_path / "home" / "ui.pid"
    group: dict[int, str] = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"dagster dev did not answer in {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")
                time.sleep(2)
        time.sleep(3)  # the daemon starts after the webserver answers
        group = _session(session)
        kinds = ("make", "dagster dev", "code-server", "api grpc", "dagster_webserver", "dagster._daemon")
        assert all(any(k in cmd for cmd in group.values()) for k in kinds), group
        # the cause of the bug: none of them may ignore SIGTERM any more
        assert not [cmd for pid, cmd in group.items() if _ignores_sigterm(pid)], group
        stopped = subprocess.run([*make, "ui-stop"], env=env, capture_output=True, text=True, timeout=180)
        assert stopped.returncode == 0, stopped.stderr
        left = {pid: cmd for pid, cmd in group.items() if Path(f"/proc/{pid}").exists() and _group_alive(pid)}
        assert left == {}, left
        assert not pid_file.exists()
        # a second stop finds nothing to stop, and says so
        again = subprocess.run([*make, "ui-stop"], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "no UI recorded" in again.stdout
    finally:
        for pid in group:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _group_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
