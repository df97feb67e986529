"""The README's shell blocks run as written in the shell that ran its first command (``make
baseline``), which creates ``.venv`` but does not activate it: a program installed there is called
through ``.venv/bin/``, else the reader gets ``patx: command not found``."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# programs that exist only inside the project's virtual environment
VENV_PROGRAMS = ("patx", "dagster", "dagster-webserver", "celery", "pytest")


def _bash_lines(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside:
            lines.append(line.split("#", 1)[0].strip())
    return [line for line in lines if line]


def test_every_venv_program_in_a_readme_shell_block_is_called_through_dot_venv_bin():
    lines = _bash_lines(README.read_text(encoding="utf-8"))
    assert len(lines) > 5
    bare = [line for line in lines
            if re.search(rf"(^|[\s;&|(]|\$\()({'|'.join(map(re.escape, VENV_PROGRAMS))})\s", line)]
    assert bare == [], f"call these through .venv/bin/: {bare}"
