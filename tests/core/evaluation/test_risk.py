"""The one risk calculator, the one random-draw merge and the one JSON-safe rule, on hand-built values."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from patx_core.evaluation.backtest import RandomBaseline
from patx_core.evaluation.risk import MIN_ANNUALIZED_DAYS, risk
from patx_core.storage.jsonsafe import iso, json_safe


def _days(n: int, step: int) -> pl.Series:
    start = datetime(2020, 1, 1, tzinfo=timezone.utc)
    return pl.datetime_range(start, start + pl.duration(days=step * (n - 1)), f"{step}d", eager=True)


def test_risk_of_a_hand_curve() -> None:
    curve = np.array([1.1, 0.99, 1.21])  # +10 %, -10 %, +22.2 % from the 1.0 invested
    r = risk(curve, _days(3, 200), periods_per_year=4.0)  # 400 days: annualized
    assert r.period_days == 400.0 and r.annualized
    assert r.total_return == pytest.approx(0.21, abs=1e-12)
    assert r.annualized_return == pytest.approx(1.21 ** (4.0 / 2) - 1, abs=1e-12)
    steps = np.array([0.1, -0.1, 1.21 / 0.99 - 1])
    assert r.sharpe == pytest.approx(steps.mean() / steps.std(ddof=1) * 2.0, abs=1e-12)
    assert r.max_drawdown == pytest.approx(1 - 0.99 / 1.1, abs=1e-12)  # the fall from 1.1 to 0.99


def test_risk_under_a_year_and_of_a_flat_curve() -> None:
    short = risk(np.array([1.1, 0.99, 1.21]), _days(3, 100), periods_per_year=4.0)
    assert short.period_days == 200.0 < MIN_ANNUALIZED_DAYS and not short.annualized
    assert short.annualized_return is None and short.sharpe is None
    assert short.total_return == pytest.approx(0.21, abs=1e-12)  # not annualized, still measured
    flat = risk(np.ones(5), _days(5, 100), periods_per_year=4.0)
    assert flat.total_return == 0.0 and flat.max_drawdown == 0.0 and flat.sharpe is None
    assert flat.annualized_return == 0.0
    with pytest.raises(ValueError, match="3 points for 4 timestamps"):
        risk(np.ones(3), _days(4, 1), periods_per_year=252.0)


def test_random_draws_merge_equal_weight_for_sleeves_and_compounded_for_folds() -> None:
    a = RandomBaseline(returns=np.array([0.1, -0.2, 0.3]), trades=np.array([2, 2, 1]), n_trades=2, seed=7)
    b = RandomBaseline(returns=np.array([0.5, 0.0]), trades=np.array([3, 3]), n_trades=3, seed=8)
    mixed = RandomBaseline.combine([a, b], "equal_weight")
    np.testing.assert_allclose(mixed.returns, [0.3, -0.1], atol=1e-12)  # draws past the shorter part dropped
    np.testing.assert_array_equal(mixed.trades, [5, 5])
    assert mixed.n_trades == 5 and mixed.seed == 7
    chained = RandomBaseline.combine([a, b], "compound")
    np.testing.assert_allclose(chained.returns, [1.1 * 1.5 - 1, 0.8 - 1], atol=1e-12)
    np.testing.assert_array_equal(chained.trades, [5, 5])
    with pytest.raises(ValueError, match="how must be"):
        RandomBaseline.combine([a], "mean")  # type: ignore[arg-type]


def test_json_safe_is_one_rule_for_json_files_and_checkpoint_metrics() -> None:
    when = datetime(2021, 3, 4, 5, 6, tzinfo=timezone.utc)
    value = {1: (np.float32(0.5), np.int64(3), np.bool_(True)), "nan": math.nan, "inf": np.inf,
             "when": when, "arr": np.array([1.0, np.nan])}
    plain = json_safe(value, strict=True)
    assert plain == {"1": [0.5, 3, True], "nan": None, "inf": None, "when": "2021-03-04T05:06:00+00:00",
                     "arr": [1.0, None]}
    assert type(plain["1"][1]) is int and type(plain["1"][2]) is bool
    json.dumps(plain, allow_nan=False)
    assert json_safe({"x": object}) == {"x": object}  # lenient: left for json.dumps to refuse
    with pytest.raises(TypeError, match="got type"):
        json_safe({"x": object}, strict=True)
    assert iso(when) == "2021-03-04T05:06:00+00:00" and iso(None) is None
    import torch

    assert json_safe({"loss": torch.tensor(0.25)}, strict=True) == {"loss": 0.25}  # a loss tensor in metrics
