"""Median candle spacing and its human form, as the checkpoint records and inference compares them."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from patx_core.data.intervals import format_duration, format_interval, interval_differs, median_spacing_seconds


def test_weekday_candles_have_a_one_day_median_spacing() -> None:
    days = pl.datetime_range(datetime(2020, 1, 1), datetime(2020, 3, 31), "1d", time_zone="UTC", eager=True)
    weekdays = days.filter(days.dt.weekday() <= 5)  # weekend gaps of 3 days
    assert median_spacing_seconds(weekdays) == 86_400.0
    assert median_spacing_seconds(weekdays.to_list()) == 86_400.0
    assert median_spacing_seconds(weekdays.to_numpy()) == 86_400.0


def test_fewer_than_two_timestamps_have_no_spacing() -> None:
    assert median_spacing_seconds([datetime(2020, 1, 1, tzinfo=timezone.utc)]) is None
    assert median_spacing_seconds(pl.Series([], dtype=pl.Datetime("us"))) is None
    with pytest.raises(ValueError, match="datetimes"):
        median_spacing_seconds(pl.Series([1, 2, 3]))


@pytest.mark.parametrize(("seconds", "text"), [(86_400, "1d"), (3_600, "1h"), (900, "15m"), (5_400, "1.5h"),
                                               (604_800, "7d"), (30, "30s"), (0.5, "0.5s")])
def test_intervals_are_written_in_the_largest_unit_they_fill(seconds: float, text: str) -> None:
    assert format_interval(seconds) == text


def test_a_different_interval_is_beyond_a_quarter_of_the_trained_one() -> None:
    assert interval_differs(3_600, 86_400) and interval_differs(86_400, 3_600)
    assert not interval_differs(86_400 * 1.2, 86_400)  # a holiday-heavy stretch of daily candles
    assert interval_differs(86_400 * 1.3, 86_400)
    assert not interval_differs(float(np.float64(86_400)), 86_400)


@pytest.mark.parametrize(("seconds", "text"), [(3_220 * 86_400, "8.8 years"), (40 * 86_400, "1.3 months"),
                                               (3 * 86_400, "3 days"), (9.96 * 86_400, "10 days"),
                                               (5_400, "1.5 hours"), (1, "1 second"), (0, "0 seconds")])
def test_ages_and_delays_read_in_calendar_words(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
