"""Return, annualized return, Sharpe and max drawdown of an equity curve, computed once.

Every curve the evaluation shows goes through :func:`risk`: the strategy of one symbol, the
equal-weight portfolio of several, buy-and-hold and the stitched walk-forward record.

- The curve is the value of 1.0 invested before its first candle, marked at every close; the
  total return is its last value minus one.
- Sharpe is the annualized mean / std (ddof 1) of its per-candle returns, the first measured
  from the 1.0 invested; ``None`` when the curve never moves. Max drawdown is the largest fall
  from a running peak (that 1.0 included), a non-negative fraction: 0.12 = 12 %.
- A curve spanning less than :data:`MIN_ANNUALIZED_DAYS` calendar days is *not* annualized:
  compounding a few months' return (or scaling their Sharpe) to a year states a figure the data
  never showed, so ``annualized_return`` and ``sharpe`` are ``None`` and ``period_days`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

_SECONDS_PER_YEAR = 365.25 * 86_400
#: Shortest period (calendar days, first candle to last) whose return and Sharpe are annualized.
MIN_ANNUALIZED_DAYS = 365.0


@dataclass(frozen=True)
class Risk:
    """The risk figures of one equity curve."""

    total_return: float
    annualized_return: float | None  # None when the period is shorter than a year
    sharpe: float | None  # annualized; None when the curve never moves or the period is under a year
    max_drawdown: float
    period_days: float  # calendar days from the curve's first candle to its last

    @property
    def annualized(self) -> bool:
        return self.period_days >= MIN_ANNUALIZED_DAYS


def periods_per_year(timestamps: pl.Series, configured: float | None) -> float:
    """Candles per year: configured, else candle count / years spanned by ``timestamps``.

    Counting candles (not the median spacing) gives ~252 for daily equities with weekends
    and holidays missing, which is what annualizing their Sharpe needs.
    """
    if configured is not None:
        return float(configured)
    span = (timestamps[-1] - timestamps[0]).total_seconds() / _SECONDS_PER_YEAR
    if timestamps.len() < 2 or span <= 0:
        raise ValueError("backtest: cannot infer periods_per_year from fewer than two distinct "
                         "timestamps; set BacktestConfig.periods_per_year")
    return (timestamps.len() - 1) / span


def annualize(total: float, exponent: float) -> float:
    """``(1 + total) ** exponent - 1`` with exponent = periods per year / periods.

    Overflows to ``inf`` (sanitized to JSON null by the evaluation) instead of raising.
    """
    if total <= -1.0:
        return -1.0
    with np.errstate(over="ignore"):
        return float(np.expm1(np.log1p(total) * exponent))


def risk(curve: np.ndarray, timestamps: pl.Series, periods_per_year: float) -> Risk:
    """The figures of ``curve`` (value of 1.0 invested, one point per candle of ``timestamps``)."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1 or curve.size == 0 or curve.size != timestamps.len():
        raise ValueError(f"risk: the equity curve has {curve.size} points for {timestamps.len()} timestamps")
    period_days = (timestamps[-1] - timestamps[0]).total_seconds() / 86_400
    annualized = period_days >= MIN_ANNUALIZED_DAYS
    total = float(curve[-1] - 1.0)
    start = np.r_[1.0, curve]
    steps = np.diff(start) / start[:-1]
    std = float(steps.std(ddof=1)) if steps.size > 1 else 0.0
    sharpe = float(steps.mean() / std * math.sqrt(periods_per_year)) if std > 1e-15 and annualized else None
    peak = np.maximum.accumulate(start)
    return Risk(
        total_return=total,
        annualized_return=annualize(total, periods_per_year / max(curve.size - 1, 1)) if annualized else None,
        sharpe=sharpe,
        max_drawdown=float(np.max(1.0 - start / peak)),
        period_days=float(period_days),
    )
