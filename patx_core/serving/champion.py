"""What a suspension does to a champion's signals: the one rule, for the ledger and the latest signal.

A champion the monitor suspended issues no buy from the candle that decided the alarm on: each of
its signals of that candle or later is a "hold" whose reason names the suspension. Signals it
recorded before that candle stay as they were (a recorded signal is never rewritten).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

SUSPENDED_PREFIX = "champion suspended"


def suspension_reason(suspension: Mapping[str, Any]) -> str:
    """The reason a held signal records: ``champion suspended: <the monitor's reason>``."""
    return f"{SUSPENDED_PREFIX}: {suspension['reason']}"


def apply_suspension(signal: str, reason: str | None, timestamp: datetime,
                     suspension: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """``(signal, reason)`` of a champion's candle at ``timestamp`` under ``suspension`` (the
    manifest's ``suspended`` block: ``reason`` and ``from``, the first candle held, an ISO string or
    a datetime; no ``from`` holds every candle); unchanged without a suspension or before it."""
    if suspension is None:
        return signal, reason
    start = suspension.get("from")
    if isinstance(start, str):
        start = datetime.fromisoformat(start)
    if start is not None and timestamp < start:
        return signal, reason
    return "hold", suspension_reason(suspension)
