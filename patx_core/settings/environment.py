"""Settings read from environment variables: one parser for a positive count, one message."""

from __future__ import annotations

import os


def positive_int_env(name: str, what: str) -> int | None:
    """``$name`` as a positive integer, or None when it is unset or blank; any other value is a
    ``ValueError`` naming the variable, its value and ``what`` it counts."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r}: expected a positive integer ({what})")
    return value
