"""Local Celery workers for the ``cpu`` and ``gpu`` queues, and the Redis broker they share.

``make workers`` = ``python -m patx_dagster.workers start``: a ``redis-server`` on 127.0.0.1 (unless
the broker already answers), then one worker per queue, each
``dagster-celery worker start -A dagster_celery.app -q <queue> -n <name>@%h -y deploy/celery/celery.yaml``
(dagster-celery appends the ``@%h``). Each runs in its own process group; the command prints
them and writes them to ``$DAGSTER_HOME/workers.pids``, which
``python -m patx_dagster.workers stop`` (``make workers-stop``) signals.

The workers load the code location themselves, so they need the environment the code location
has (``DAGSTER_HOME``, ``PATX_DATA_DIR``, ``PATX_DATASETS``, ``PATX_VARIANTS``); they are given
``PATX_EXECUTOR=celery`` so that a step run on them plans the Celery number of fold steps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from patx_dagster.executor import broker_url, celery_config_file, require_broker

#: How long a worker may take to import the code location and report ready (seconds).
READY_TIMEOUT = 120.0


@dataclass
class Process:
    """A started process (the leader of its own process group) and where its output goes."""

    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to its process group (a worker finishes nothing more), SIGKILL after ``timeout``."""
        stop_group(self.pid, timeout=timeout, leader=self.proc)


def stop_group(pgid: int, *, timeout: float = 20.0, leader: subprocess.Popen | None = None) -> None:
    """End process group ``pgid``: SIGTERM, then SIGKILL for whatever is left after ``timeout``.
    ``leader``: the group leader's Popen, reaped here so that its zombie does not count as alive."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if leader is not None:
        try:
            leader.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _spawn(name: str, cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, start_new_session=True)
    return Process(name=name, proc=proc, log=log)


def start_redis(port: int, workdir: Path, *, timeout: float = 20.0) -> Process:
    """``redis-server`` on 127.0.0.1:``port``, without persistence (the queue is rebuilt by new runs)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server not found (Debian: apt-get install redis-server; "
                                "or bash .ci/system-deps.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = _spawn("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--dir", str(workdir)], workdir / "redis.log")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{port}: {server.log.read_text()[-2000:]}")
        time.sleep(0.1)


def worker_env(broker: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update({"PATX_CELERY_BROKER": broker, "PATX_EXECUTOR": "celery"})
    # dagster-celery starts `celery` from PATH: this interpreter's, also when its venv is not activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def start_worker(queue: str, name: str, log: Path, *, env: Mapping[str, str], concurrency: int = 1,
                 wait: bool = True) -> Process:
    """A ``dagster-celery`` worker named ``<name>@<host>`` serving ``queue`` with ``concurrency``
    task processes; ``wait``: until it reports ready (bounded by :data:`READY_TIMEOUT`)."""
    exe = Path(sys.executable).parent / "dagster-celery"
    cmd = [str(exe if exe.exists() else "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
           "-q", queue, "-n", name, "-y", str(celery_config_file()), "--", "--concurrency", str(concurrency)]
    worker = _spawn(name, cmd, log, env)
    if wait:
        wait_ready(worker)
    return worker


def wait_ready(worker: Process, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
        if " ready." in text:
            return
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker {worker.name} exited ({worker.proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.25)
    worker.stop()
    raise TimeoutError(f"worker {worker.name} not ready after {timeout:.0f} s:\n{worker.log.read_text()[-3000:]}")


def _pid_file() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise SystemExit("DAGSTER_HOME is not set (the workers open the Dagster instance there)")
    return Path(home) / "workers.pids"


def _start(args: argparse.Namespace) -> int:
    broker = broker_url()
    pid_file = _pid_file()
    logs = pid_file.parent / "workers"
    started: list[Process] = []
    try:
        require_broker(broker, timeout=1.0)
        print(f"broker {broker} already answers; not starting redis-server")
    except RuntimeError:
        parts = urlsplit(broker)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise SystemExit(f"broker {broker} is unreachable and not local: start it there")
        started.append(start_redis(parts.port or 6379, logs))
    env = worker_env(broker)
    try:
        for queue, count in (("cpu", args.cpu), ("gpu", args.gpu)):
            for i in range(1, count + 1):
                started.append(start_worker(queue, f"{queue}{i}", logs / f"{queue}{i}.log", env=env,
                                            concurrency=args.concurrency))
    except Exception:
        for p in reversed(started):
            p.stop()
        raise
    with open(pid_file, "a", encoding="utf-8") as fh:
        for p in started:
            fh.write(f"{p.pid} {p.name}\n")
    for p in started:
        print(f"{p.name:6s} pid {p.pid}  log {p.log}")
    print(f"broker {broker}; executor: export PATX_EXECUTOR=celery PATX_CELERY_BROKER={broker}")
    pids = " ".join(f"-{p.pid}" for p in started)
    print(f"stop them: make workers-stop   (or: kill -TERM -- {pids})")
    return 0


def _stop(_args: argparse.Namespace) -> int:
    pid_file = _pid_file()
    if not pid_file.exists():
        print("no workers recorded")
        return 0
    # Workers first, the broker last, so no worker loses its broker while finishing.
    entries = [line.split() for line in pid_file.read_text().splitlines() if line.strip()]
    for pid, name in sorted(entries, key=lambda e: e[1] == "redis"):
        gone = _not_ours(int(pid))
        if gone:
            print(f"skipped {name} (pid {pid}): {gone}")
            continue
        stop_group(int(pid))
        print(f"stopped {name} (pid {pid})")
    pid_file.unlink()
    return 0


def _not_ours(pid: int) -> str | None:
    """Why ``pid`` is no longer a worker or broker that ``start`` started (after a reboot or a
    crash the number may belong to another program now), or None. Without /proc: trusted."""
    if not Path("/proc/self").exists():
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "not running"
    return None if ("celery" in cmdline or "redis-server" in cmdline) else f"now another program ({cmdline[:60]!r})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patx_dagster.workers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="redis-server (if needed) + cpu and gpu workers, in the background")
    start.add_argument("--cpu", type=int, default=1, help="cpu-queue workers")
    start.add_argument("--gpu", type=int, default=1, help="gpu-queue workers (several may share one GPU)")
    start.add_argument("--concurrency", type=int, default=1, help="task processes per worker")
    sub.add_parser("stop", help="stop what `start` started")
    args = parser.parse_args(argv)
    return _start(args) if args.command == "start" else _stop(args)


if __name__ == "__main__":
    sys.exit(main())
