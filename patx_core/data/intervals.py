"""Candle intervals: the median spacing of a timestamp column, and how to write it for a person.

A checkpoint records the candle interval it was trained on, so scoring candles of another
interval (hourly data into a daily model) can be named instead of silently giving numbers.
The median spacing is used, not the mean or the minimum: weekends, holidays and the odd gap
leave the median of daily equities at one day.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import numpy as np
import polars as pl

# Durations are settings (a dataset's interval, its max_staleness): their one parser lives there.
from patx_core.settings.durations import UNIT_SECONDS

# Largest first: an interval is written in the largest unit it fills at least once (a week as "7d").
_WRITTEN_UNITS = ("d", "h", "m", "s")


def median_spacing_seconds(timestamps: pl.Series | Sequence[datetime] | np.ndarray) -> float | None:
    """Median gap between consecutive timestamps in seconds; ``None`` with fewer than two.

    Accepts a polars datetime Series, a sequence of ``datetime`` or a ``datetime64`` array,
    in time order (the validated raw data always is).
    """
    if isinstance(timestamps, pl.Series):
        series = timestamps
    elif isinstance(timestamps, np.ndarray):
        series = pl.Series(timestamps)
    else:
        series = pl.Series(list(timestamps))
    if series.len() < 2:
        return None
    if not isinstance(series.dtype, pl.Datetime):
        raise ValueError(f"median_spacing_seconds needs datetimes, got dtype {series.dtype}")
    gaps = series.diff().drop_nulls().dt.total_microseconds().to_numpy() / 1e6
    return float(np.median(gaps))


def format_interval(seconds: float) -> str:
    """``86400`` → ``"1d"``, ``3600`` → ``"1h"``, ``900`` → ``"15m"``, ``5400`` → ``"1.5h"``."""
    if not seconds > 0:
        raise ValueError(f"format_interval needs a positive number of seconds, got {seconds!r}")
    for unit in _WRITTEN_UNITS:
        if seconds >= UNIT_SECONDS[unit]:
            return f"{seconds / UNIT_SECONDS[unit]:.3g}{unit}"
    return f"{seconds:.3g}s"


# Calendar units for long spans: a year is 365.25 days, a month a twelfth of it.
_LONG_UNITS = (("year", 365.25 * 86_400.0), ("month", 365.25 * 86_400.0 / 12), ("day", 86_400.0),
               ("hour", 3_600.0), ("minute", 60.0), ("second", 1.0))


def format_duration(seconds: float) -> str:
    """An age or a delay for a person: ``3.22e3`` days → ``"8.8 years"``, ``5400`` → ``"1.5 hours"``.

    ``format_interval`` writes a candle size the way a config does (``"1d"``); a span of years in
    that form reads ``"3.22e+03d"``. Here the largest unit filled at least once is used, with one
    decimal below ten.
    """
    if not seconds >= 0:
        raise ValueError(f"format_duration needs a non-negative number of seconds, got {seconds!r}")
    for unit, size in _LONG_UNITS:
        if seconds >= size or unit == "second":
            value = round(seconds / size, 1)
            text = f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
            return f"{text} {unit}" + ("" if text == "1" else "s")
    raise AssertionError("unreachable")


#: Observed spacing may differ this much (a fraction of the trained interval) before it counts
#: as another interval: gaps move a median a little, a different candle size moves it by 4x+.
INTERVAL_TOLERANCE = 0.25


def interval_differs(observed_seconds: float, trained_seconds: float,
                     tolerance: float = INTERVAL_TOLERANCE) -> bool:
    """True when ``observed`` is off ``trained`` by more than ``tolerance`` of ``trained``."""
    return abs(observed_seconds - trained_seconds) > tolerance * trained_seconds


