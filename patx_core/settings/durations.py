"""Durations as settings write them ("1d", "4h", "15m", "1w", "30s"): the one parser and unit table.

A dataset's ``interval`` and ``max_staleness`` are read here, so the settings never reach into
the data modules; :mod:`patx_core.data.intervals` writes and compares intervals with the same table.
"""

from __future__ import annotations

import re

#: Seconds per time unit: the one table behind parsing ("15m", "1w"), writing intervals ("1.5h")
#: and reading durations in logs ("1m34s", "120ms").
UNIT_SECONDS: dict[str, float] = {"w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "min": 60.0,
                                  "s": 1.0, "ms": 1e-3}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$")


def parse_duration(text: str, *, field: str = "duration") -> float:
    """``"1d"``, ``"4h"``, ``"15m"``, ``"1w"``, ``"30s"`` → seconds; ``ValueError`` names the field."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{field} must be a positive number and a unit (s, m, h, d, w), e.g. '1d' or "
                         f"'15m'; got {text!r}")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]
