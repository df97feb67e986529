"""Helpers shared by the tests that need system tools (Chromium, PostgreSQL)."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest


def require(found: Any, what: str, install: str = "bash .ci/system-deps.sh") -> Any:
    """``found``, or skip naming what is missing — a failure when ``CI`` is set, since CI installs it."""
    if found:
        return found
    message = f"{what} not found (install: {install})"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {message}")
    pytest.skip(message)


def free_port() -> int:
    """A loopback TCP port nothing listens on at the time of the call (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
