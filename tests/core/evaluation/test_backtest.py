"""Backtest arithmetic on a hand-built series, and a reproducible random-entry baseline."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest

from patx_core.evaluation.backtest import annualization_note, backtest, random_entry_baseline
from patx_core.settings.config import BacktestConfig

CLOSE = np.array([100, 102, 101, 105, 110, 108, 107, 111, 115, 112, 118, 120], dtype=float)


def _timestamps(n: int, days: int = 1) -> pl.Series:
    return pl.datetime_range(pl.datetime(2020, 1, 1), pl.datetime(2020, 1, 1) + pl.duration(days=days * (n - 1)),
                             f"{days}d", time_zone="UTC", eager=True)


def _hand_series(days: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sample rows 1..8 of a 12-candle table; row 4's exit is a take-profit fill at 109 (not a close).

    ``days`` apart: the default daily candles make a 9-day backtest period (too short to annualize).
    """
    ts = _timestamps(CLOSE.size, days)
    entry = np.arange(1, 9)
    holding = np.array([3, 2, 2, 2, 2, 2, 2, 2])
    exit_ = entry + holding  # 4, 4, 5, 6, 7, 8, 9, 10
    exit_price = CLOSE[exit_].copy()
    exit_price[3] = 109.0
    samples = pl.DataFrame({"timestamp": ts.gather(entry), "exit_index": exit_, "holding": holding,
                            "trade_return": exit_price / CLOSE[entry] - 1})
    return samples, pl.DataFrame({"timestamp": ts, "entry_price": CLOSE})


def test_costs_non_overlap_and_compounding_on_a_hand_series() -> None:
    samples, prices = _hand_series(days=41)  # row 1 to row 10: 369 days, long enough to annualize
    # Signals at rows 1, 2, 4, 5, 7. Row 2 opens inside trade 1->4 and row 5 inside 4->6: skipped.
    # Row 4 opens on trade 1's exit candle, which the rule allows.
    signal = np.isin(np.arange(1, 9), [1, 2, 4, 5, 7])
    res = backtest(samples, signal, prices, BacktestConfig(cost_bps=10, n_random=50, periods_per_year=252))
    cost = 0.999 / 1.001
    g1, g2, g3 = 110 / 102 * cost, 109 / 110 * cost, 112 / 111 * cost
    assert res.n_signals == 5 and res.trades == 3
    assert res.total_return == pytest.approx(g1 * g2 * g3 - 1)
    assert res.hit_rate == pytest.approx(2 / 3)  # the take-profit fill at 109 < 110 lost money
    assert res.exposure == pytest.approx((3 + 2 + 2) / 9)  # period: row 1 to the last exit, row 10
    assert res.buy_and_hold_return == pytest.approx(118 / 102 * cost - 1)
    assert res.annualized and res.period_days == 369.0
    assert res.annualized_return == pytest.approx((g1 * g2 * g3) ** (252 / 9) - 1)
    # Marked to market at each close, an open position at its liquidation value.
    expected = np.array([
        cost,                                   # row 1: bought at 102
        cost * 101 / 102,
        cost * 105 / 102,
        g1 * cost,                              # row 4: sold at 110, bought again
        g1 * cost * 108 / 110,
        g1 * g2,                                # row 6: take-profit fill at 109
        g1 * g2 * cost,                         # row 7: bought at 111
        g1 * g2 * cost * 115 / 111,
        g1 * g2 * g3,                           # row 9: sold at 112
        g1 * g2 * g3,
    ])
    np.testing.assert_allclose(res.equity["strategy"].to_numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(res.equity["buy_and_hold"].to_numpy(), cost * CLOSE[1:11] / 102, rtol=1e-12)
    assert res.max_drawdown == pytest.approx(1 - 112 / 115)  # the fall from row 8 to row 9
    steps = np.diff(np.r_[1.0, expected]) / np.r_[1.0, expected[:-1]]
    assert res.sharpe == pytest.approx(steps.mean() / steps.std(ddof=1) * np.sqrt(252))
    assert res.start == prices["timestamp"][1] and res.end == prices["timestamp"][10]


def test_a_period_under_a_year_is_not_annualized() -> None:
    samples, prices = _hand_series()  # daily: 9 days from the first entry to the last exit
    signal = np.isin(np.arange(1, 9), [1, 4, 7])
    res = backtest(samples, signal, prices, BacktestConfig(n_random=20, periods_per_year=252))
    long_samples, long_prices = _hand_series(days=41)
    long = backtest(long_samples, signal, long_prices, BacktestConfig(n_random=20, periods_per_year=252))
    assert res.total_return == pytest.approx(long.total_return)  # the same trades, only the calendar differs
    # Trades 1->4, 4->6, 7->9, as in the hand series above, at the default 5 bps per side.
    cost = 0.9995 / 1.0005
    g1, g2, g3 = 110 / 102 * cost, 109 / 110 * cost, 112 / 111 * cost
    assert long.annualized_return == pytest.approx((g1 * g2 * g3) ** (252 / 9) - 1, rel=1e-9)
    curve = np.array([cost, cost * 101 / 102, cost * 105 / 102, g1 * cost, g1 * cost * 108 / 110, g1 * g2,
                      g1 * g2 * cost, g1 * g2 * cost * 115 / 111, g1 * g2 * g3, g1 * g2 * g3])
    steps = np.diff(np.r_[1.0, curve]) / np.r_[1.0, curve[:-1]]
    assert long.sharpe == pytest.approx(steps.mean() / steps.std(ddof=1) * np.sqrt(252), rel=1e-9)
    assert long.max_drawdown == res.max_drawdown == pytest.approx(1 - 112 / 115, rel=1e-9)
    assert not res.annualized and res.period_days == 9.0
    assert res.annualized_return is None and res.sharpe is None
    block = res.to_dict()
    assert block["annualized"] is False and block["period_days"] == 9.0
    assert block["annualized_return"] is None and block["sharpe"] is None
    assert annualization_note(False, 9.0, 252, "test") == "not annualized (test period 9 days)"
    assert annualization_note(True, 369.0, 252, "val") == "annualized at 252 candles per year (val period 369 days)"


def test_zero_cost_and_no_signals() -> None:
    samples, prices = _hand_series()
    free = backtest(samples, np.isin(np.arange(1, 9), [1]), prices, BacktestConfig(cost_bps=0, n_random=20))
    assert free.total_return == pytest.approx(110 / 102 - 1)
    assert free.buy_and_hold_return == pytest.approx(118 / 102 - 1)
    none = backtest(samples, np.zeros(8, bool), prices, BacktestConfig(n_random=20))
    assert none.trades == 0 and none.total_return == 0.0 and none.hit_rate is None
    assert none.sharpe is None and none.strategy_percentile is None and none.exposure == 0.0


def test_periods_per_year_inferred_from_candle_count() -> None:
    samples, prices = _hand_series()
    res = backtest(samples, np.ones(8, bool), prices, BacktestConfig(n_random=20))
    assert res.periods_per_year == pytest.approx(11 / (11 / 365.25))  # daily candles, 11 days


def test_rejects_misaligned_inputs() -> None:
    samples, prices = _hand_series()
    with pytest.raises(ValueError, match="timestamps differ"):
        backtest(samples.with_columns(pl.col("holding") + 1), np.ones(8, bool), prices, BacktestConfig())
    with pytest.raises(ValueError, match="signals"):
        backtest(samples, np.ones(7, bool), prices, BacktestConfig())


def _random_walk_split(n: int = 3000, seed: int = 5) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    ts = _timestamps(n)
    entry = np.arange(n - 12)
    holding = rng.integers(1, 11, entry.size)
    exit_ = entry + holding
    samples = pl.DataFrame({"timestamp": ts.gather(entry), "exit_index": exit_, "holding": holding,
                            "trade_return": close[exit_] / close[entry] - 1})
    return samples, pl.DataFrame({"timestamp": ts, "entry_price": close})


def test_random_baseline_is_reproducible_and_fast() -> None:
    samples, prices = _random_walk_split()
    rng = np.random.default_rng(1)
    signal = rng.random(samples.height) < 0.05
    cfg = BacktestConfig(n_random=1000, seed=11)
    t0 = time.perf_counter()
    a = backtest(samples, signal, prices, cfg)
    elapsed = time.perf_counter() - t0
    b = backtest(samples, signal, prices, cfg)
    c = backtest(samples, signal, prices, BacktestConfig(n_random=1000, seed=12))
    # exact: one seed, the same inputs, in this process
    np.testing.assert_array_equal(a.random.returns, b.random.returns)
    assert a.to_dict() == b.to_dict()
    assert not np.array_equal(a.random.returns, c.random.returns)
    assert np.all(a.random.trades == a.trades)  # same trade count as the strategy
    summary = a.to_dict()["random_baseline"]
    assert summary["draws"] == summary["full_draws"] == 1000
    assert summary["p5"] < summary["p50"] < summary["p95"]
    assert elapsed < 2.0  # 1,000 draws over ~3,000 samples


def test_random_baseline_uses_the_candidates_outcomes() -> None:
    # Every candidate trade grows by 1 % net: any full draw of k trades returns 1.01**k - 1.
    entry = np.arange(0, 200)
    exit_ = entry + 3
    res = random_entry_baseline(entry, exit_, np.full(200, 1.01), n_trades=20, n_draws=300, seed=0)
    assert np.all(res.trades == 20)
    np.testing.assert_allclose(res.returns, 1.01**20 - 1)


def test_strategy_percentile_separates_skill_from_anti_skill() -> None:
    samples, prices = _random_walk_split(n=1500)
    ret = samples["trade_return"].to_numpy()
    cfg = BacktestConfig(n_random=300, seed=3)
    best = backtest(samples, ret > np.quantile(ret, 0.9), prices, cfg)
    worst = backtest(samples, ret < np.quantile(ret, 0.1), prices, cfg)
    assert best.strategy_percentile > 99 and worst.strategy_percentile < 1
