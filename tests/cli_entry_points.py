"""The ``patx`` command as an installed package would see it, without installing the worktree.

``pip install -e .`` writes the entry points of pyproject.toml into a ``*.dist-info`` folder;
:func:`installed_env` writes the same folder under a tmp dir placed first on ``PYTHONPATH``, so a
subprocess finds this checkout's ``patx.commands`` (and not those of whatever copy the venv
was installed from).
"""

from __future__ import annotations

import os
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
