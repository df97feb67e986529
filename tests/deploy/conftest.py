"""A throwaway PostgreSQL server (Debian's `postgresql`: initdb + pg_ctl) for the deploy tests.

Missing binaries skip the tests locally; with ``CI`` set they fail, because CI installs them
(.ci/system-deps.sh).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.tools import free_port, require

PG_USER = "patx"
PG_DB = "dagster"


def pg_bin_dir() -> str | None:
    """The newest Debian postgresql bin dir, or wherever `initdb` is on PATH."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    dirs = [d for d in dirs if os.access(os.path.join(d, "initdb"), os.X_OK)]
    if dirs:
        return dirs[-1]
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_USER": self.user, "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db}

    def connect(self, db: str | None = None):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=db or self.db, connect_timeout=10)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PgServer]:
    bindir = require(pg_bin_dir(), "PostgreSQL server binaries (initdb, pg_ctl)")
    for module in ("psycopg2", "dagster_postgres"):
        try:
            __import__(module)
        except ImportError:
            require(None, f"Python package {module} (pip install -e '.[deploy]')")
    # PostgreSQL refuses to run as root: run its binaries as the `postgres` system user, in a
    # directory that user owns (pytest's tmp_path is private to root).
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            require(None, "the `postgres` system user (PostgreSQL cannot run as root)")
        as_user = [require(shutil.which("runuser"), "runuser"), "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="patx-pg-"))
    root.chmod(0o755)
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    password = secrets.token_hex(12)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if owner is not None:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data, log = root / "data", root / "server.log"
    port = free_port()

    def run(*cmd: str) -> None:
        out = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{server_log}")

    started = False
    try:
        # --no-sync and fsync=off: durability is not under test, start-up time is.
        run(f"{bindir}/initdb", "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions")
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB")
        run(f"{bindir}/pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        started = True
        server = PgServer(host="127.0.0.1", port=port, user=PG_USER, password=password, db=PG_DB)
        conn = server.connect(db="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {PG_DB}")
        conn.close()
        yield server
    finally:
        if started:
            subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
