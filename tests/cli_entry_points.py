"""The ``patx`` command as an installed package would see it, without installing the worktree.

``pip install -e .`` writes the entry points of pyproject.toml into a ``*.dist-info`` folder;
:func:`installed_env` writes the same folder under a tmp dir placed first on ``PYTHONPATH``, so a
subprocess finds this checkout's ``patx.commands`` (and not those of whatever copy the venv
was installed from).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def declared_entry_points() -> list[EntryPoint]:
    """The ``patx.commands`` entry points pyproject.toml declares."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    group = project.get("entry-points", {}).get("patx.commands", {})
    return [EntryPoint(name, value, "patx.commands") for name, value in group.items()]


def installed_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment of a subprocess that sees this checkout as the installed ``patx``."""
    info = tmp / "patx-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: patx\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[patx.commands]\n" + "".join(f"{ep.name} = {ep.value}\n" for ep in declared_entry_points()))
    env = {**os.environ, **extra}
    return {**env, "PYTHONPATH": os.pathsep.join([str(tmp), str(REPO), env.get("PYTHONPATH", "")])}


def first_to_load_torch(steps: list[str], env: dict[str, str]) -> str | None:
    """Run each piece of Python in ``steps``, in order, in one fresh interpreter (in :data:`REPO`,
    with ``env``) and return the first after which torch is imported, or None: the pin that
    imports and commands which neither train nor predict start without torch. One interpreter
    for all the steps, since each start costs seconds; the answer still names the culprit."""
    lines = []
    for i, step in enumerate(steps):
        lines += [step, f"print('step {i}:', 'torch' in __import__('sys').modules, flush=True)"]
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert f"step {len(steps) - 1}:" in out.stdout, out.stderr
    loaded = [i for i in range(len(steps)) if f"step {i}: True" in out.stdout]
    return steps[loaded[0]] if loaded else None


def patx_script(*args: str) -> str:
    """Python that runs ``patx ARGS`` in process (``--help`` and usage errors exit by SystemExit)."""
    return f"from patx_core.cli import main\ntry:\n    main({list(args)!r})\nexcept SystemExit:\n    pass"
