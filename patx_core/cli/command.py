"""What every ``patx`` subcommand does the same way: its log lines, its error line, its exit codes.

A subcommand's expected failures (a wrong name, a missing file, a refused setting) end as one line
``error: <message>`` on stderr and exit code 2, never a traceback; logs go to stderr so stdout keeps
the command's own output (JSON lines, a report).
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

#: The exit code of a refused request (bad arguments, names, files or settings).
USAGE_ERROR = 2
#: The failures a person can fix from the message alone.
EXPECTED = (KeyError, ValueError, RuntimeError, FileNotFoundError)


def setup_logging(level: int = logging.WARNING) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def fail(message: str, code: int = USAGE_ERROR) -> int:
    """Print ``error: message`` on stderr; return ``code`` for the command to exit with."""
    print(f"error: {message}", file=sys.stderr)
    return code


def run_command(body: Callable[[], int], *, level: int = logging.WARNING) -> int:
    """Set up logging at ``level``, run ``body`` and turn an expected failure into :func:`fail`."""
    setup_logging(level)
    try:
        return body()
    except EXPECTED as exc:
        return fail(str(exc))
