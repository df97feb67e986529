"""``make ui`` / ``make ui-stop``: ``dagster dev`` as one process group that a stop ends whole.

``start`` (``make ui``) records its pid in ``$DAGSTER_HOME/ui.pid`` and becomes ``dagster dev``
with SIGINT and SIGTERM back at their default disposition. Why that matters: a background job of
a non-interactive shell (``setsid make ui &`` in a script) starts with SIGINT ignored, and Dagster
maps SIGTERM to whatever SIGINT does ("for k8s"), so every process of the UI — ``make``,
``dagster dev``, its code server, gRPC server, webserver and daemon — ended up ignoring SIGTERM,
and a ``pkill -TERM`` of the session left all six running. With the dispositions restored, SIGTERM
reaches ``dagster dev`` as an interrupt and it shuts its children down.

``stop`` (``make ui-stop``) signals the process group of the recorded ``dagster dev`` (``make ui``
and everything it started): SIGTERM, then SIGKILL for whatever is left after the timeout. A pid
file that outlived its process (a reboot, a crash) is not trusted: the pid must still be a
``dagster dev``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from patx_core.storage.artifacts import atomic_write_text
from patx_dagster.workers import stop_group

#: How long ``dagster dev`` gets to shut its children down before the rest is killed (seconds).
STOP_TIMEOUT_S = 60.0


def pid_file() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise SystemExit("DAGSTER_HOME is not set (the UI's instance and its pid file live there)")
    return Path(home) / "ui.pid"


def _start(dev_args: Sequence[str]) -> int:
    dagster = Path(sys.executable).with_name("dagster")
    atomic_write_text(pid_file(), f"{os.getpid()}\n")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)  # inherited across exec: see the module docstring
    os.execv(str(dagster), [str(dagster), "dev", *dev_args])
    return 1  # not reached: execv replaces this process


def _ui_pid() -> tuple[int | None, str]:
    """The recorded ``dagster dev`` and, when there is none, why."""
    path = pid_file()
    if not path.exists():
        return None, f"no UI recorded ({path} is missing)"
    pid = int(path.read_text().split()[0])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None, f"the UI recorded in {path} (pid {pid}) is not running"
    words = [w.decode(errors="replace") for w in cmdline]
    if not any(Path(w).name == "dagster" for w in words) or "dev" not in words:
        return None, f"pid {pid} in {path} is now another program ({' '.join(words)[:60]!r})"
    return pid, ""


def _stop(timeout_s: float) -> int:
    pid, why = _ui_pid()
    if pid is None:
        print(why)
        pid_file().unlink(missing_ok=True)
        return 0
    group = os.getpgid(pid)
    stop_group(group, timeout=timeout_s)
    pid_file().unlink(missing_ok=True)
    print(f"stopped the UI (dagster dev pid {pid}, process group {group})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patx_dagster.ui", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="become `dagster dev ARGS…`, stoppable by `stop`")
    start.add_argument("dev_args", nargs=argparse.REMAINDER, help="arguments of `dagster dev` (after --)")
    stop = sub.add_parser("stop", help="end every process of the recorded UI")
    stop.add_argument("--timeout", type=float, default=STOP_TIMEOUT_S,
                      help=f"seconds before SIGKILL (default {STOP_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    if args.command == "start":
        return _start([a for a in args.dev_args if a != "--"])
    return _stop(args.timeout)


if __name__ == "__main__":
    sys.exit(main())
