"""Helpers shared by the tests that need system tools (Chromium, PostgreSQL)."""

from __future__ import annotations

import os
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
