"""Features: TA-Lib-exact indicators, causality, and the scale-free relative set."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import talib  # test-only oracle: the C library whose definitions the features follow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patx_core.settings.config import WARMUP_ROWS
from patx_core.data.features import (FEATURE_COLUMNS, RELATIVE_FEATURE_COLUMNS, compute_features,
                                compute_indicators, feature_columns)
from patx_core.data.indicators import RESUM_EVERY, indicator_matrix
from patx_core.data.contract import RawDataError
from tests.conftest import make_candles

RTOL = 1e-8


@pytest.fixture(scope="module")
def long_candles() -> pl.DataFrame:
    return make_candles(3000, seed=11, vol=0.02)


@pytest.fixture(scope="module")
def prefix_candles() -> pl.DataFrame:
    return make_candles(450, seed=5)


def _talib_reference(raw: pl.DataFrame) -> dict[str, np.ndarray]:
    o, h, l, c = (raw.get_column(k).to_numpy() for k in ("open", "high", "low", "close"))
    upper, middle, lower = talib.BBANDS(c, timeperiod=20, nbdevup=2, nbdevdn=2, matype=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # zero-width bands in the flat test
        percent = (c - lower) / (upper - lower)
    return {"rsi_14": talib.RSI(c, 14), "atr_14": talib.ATR(h, l, c, 14), "ema_50": talib.EMA(c, 50),
            "ema_200": talib.EMA(c, 200), "bb_middle": middle, "bb_upper": upper, "bb_lower": lower,
            "bb_width": (upper - lower) / middle, "bb_percent": percent}


def _assert_matches(ours: pl.Series, ref: np.ndarray, name: str) -> None:
    mine = ours.fill_null(np.nan).to_numpy()
    assert np.array_equal(np.isnan(mine), np.isnan(ref)), f"{name}: warm-up differs from TA-Lib"
    ok = ~np.isnan(ref)
    # bb_percent is a position in [0, 1] that crosses 0 (close at the lower band): a relative
    # tolerance means nothing there, so it also gets an absolute one of the same size.
    atol = RTOL if name == "bb_percent" else 0.0
    np.testing.assert_allclose(mine[ok], ref[ok], rtol=RTOL, atol=atol, err_msg=name)


def test_indicators_match_talib(long_candles: pl.DataFrame) -> None:
    ind = compute_indicators(long_candles)
    assert ind.columns == ["timestamp", *FEATURE_COLUMNS]
    assert ind.height == long_candles.height
    for name, ref in _talib_reference(long_candles).items():
        _assert_matches(ind.get_column(name), ref, name)
    for name in ("timestamp", "open", "high", "low", "close", "volume"):
        assert ind.get_column(name).equals(long_candles.get_column(name))


def test_indicators_match_talib_on_a_trend_after_a_flat_start() -> None:
    # Flat first 60 candles (TA-Lib's RSI is 0 with no gains and no losses; zero-width bands),
    # then a strong trend (RSI near 100).
    raw = make_candles(600, seed=2, drift=0.01, vol=0.002)
    flat = pl.int_range(pl.len()) < 60
    raw = raw.with_columns(pl.when(flat).then(100.0).otherwise(pl.col(c)).alias(c)
                           for c in ("open", "high", "low", "close"))
    ind = compute_indicators(raw)
    ref = _talib_reference(raw)
    for name in ("rsi_14", "atr_14", "ema_50", "ema_200", "bb_middle", "bb_upper", "bb_lower"):
        _assert_matches(ind.get_column(name), ref[name], name)
    assert ind.get_column("rsi_14")[14] == 0.0 and ind.get_column("atr_14")[14] == 0.0
    assert ind.get_column("bb_percent")[59] == 0.5  # zero-width band: the close sits at the middle
    assert ind.get_column("bb_width")[59] == 0.0
    assert ind.get_column("rsi_14")[400] > 90


def test_warmup_ends_at_ema200_for_both_sets(long_candles: pl.DataFrame) -> None:
    for feature_set in ("seed", "relative"):
        feats = compute_features(long_candles, feature_set).drop("timestamp")
        complete = feats.select(pl.all_horizontal(pl.all().is_not_null())).to_series()
        assert complete.arg_true()[0] == WARMUP_ROWS
        assert complete[WARMUP_ROWS:].all()


def test_feature_columns_per_set() -> None:
    assert feature_columns("seed") == FEATURE_COLUMNS
    assert FEATURE_COLUMNS == ("open", "high", "low", "close", "volume", "rsi_14", "atr_14", "ema_50",
                               "ema_200", "bb_middle", "bb_upper", "bb_lower", "bb_width", "bb_percent")
    assert feature_columns("relative") == RELATIVE_FEATURE_COLUMNS
    assert len(RELATIVE_FEATURE_COLUMNS) == len(set(RELATIVE_FEATURE_COLUMNS)) == 14
    # the price-level columns are renamed so a checkpoint's feature_columns say which set it used
    assert not {"open", "close", "ema_200", "atr_14"} & set(RELATIVE_FEATURE_COLUMNS)
    with pytest.raises(ValueError, match="feature_set must be one of"):
        feature_columns("raw")


def test_relative_definitions(long_candles: pl.DataFrame) -> None:
    ind = compute_indicators(long_candles)
    rel = compute_features(long_candles, "relative")
    assert rel.columns == ["timestamp", *RELATIVE_FEATURE_COLUMNS]
    c = ind.get_column("close").to_numpy()
    col = lambda f, k: f.get_column(k).fill_null(np.nan).to_numpy()  # noqa: E731
    for level in ("open", "high", "low", "ema_50", "ema_200", "bb_middle", "bb_upper", "bb_lower"):
        np.testing.assert_allclose(col(rel, f"{level}_rel"), col(ind, level) / c - 1, rtol=1e-12)
    np.testing.assert_allclose(col(rel, "close_logret")[1:], np.diff(np.log(c)), rtol=1e-9)
    np.testing.assert_allclose(col(rel, "atr_14_rel"), col(ind, "atr_14") / c, rtol=1e-12)
    v = ind.get_column("volume").to_numpy()
    trailing = np.convolve(v, np.ones(20) / 20, mode="valid")
    np.testing.assert_allclose(col(rel, "volume_logratio_20")[19:], np.log(v[19:] / trailing), rtol=1e-9)
    for same in ("rsi_14", "bb_width", "bb_percent"):
        assert rel.get_column(same).equals(ind.get_column(same))


def test_zero_volume_gives_a_neutral_relative_volume() -> None:
    raw = make_candles(300, seed=4).with_columns(
        pl.when(pl.int_range(pl.len()) == 250).then(0.0).otherwise(pl.col("volume")).alias("volume"))
    rel = compute_features(raw, "relative").get_column("volume_logratio_20")
    assert rel[250] == 0.0 and rel[19:].is_finite().all()


@pytest.mark.parametrize("factor", [1000.0, 1e-3])
def test_relative_features_are_scale_invariant(long_candles: pl.DataFrame, factor: float) -> None:
    scaled = long_candles.with_columns(pl.col("open", "high", "low", "close") * factor)
    base = compute_features(long_candles, "relative").drop("timestamp")
    other = compute_features(scaled, "relative").drop("timestamp")
    np.testing.assert_allclose(other.to_numpy(), base.to_numpy(), rtol=1e-7, atol=1e-9)
    # the guide's raw set is not: its price columns move with the level
    assert not np.allclose(compute_features(scaled, "seed").get_column("ema_50").drop_nulls().to_numpy(),
                           compute_features(long_candles, "seed").get_column("ema_50").drop_nulls().to_numpy())


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=1, max_value=450), feature_set=st.sampled_from(["seed", "relative"]))
def test_prefix_causality(prefix_candles: pl.DataFrame, cut: int, feature_set: str) -> None:
    """Values on a prefix equal the whole series' values: no row looks at a later candle."""
    whole = compute_features(prefix_candles, feature_set).head(cut)
    prefix = compute_features(prefix_candles.head(cut), feature_set)
    # equal up to float noise: polars' rolling volume mean (relative set) may add in another order
    # on a shorter series; a look-ahead moves values by far more
    np.testing.assert_allclose(prefix.drop("timestamp").fill_null(np.nan).to_numpy(),
                               whole.drop("timestamp").fill_null(np.nan).to_numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cut", [1, 15, 200, RESUM_EVERY - 1, RESUM_EVERY, RESUM_EVERY + 1, 2 * RESUM_EVERY + 1])
def test_indicators_on_a_prefix_are_bit_identical_across_resum_rows(cut: int) -> None:
    """The rolling sums are re-added at fixed row numbers, so a prefix reproduces every bit."""
    raw = make_candles(2 * RESUM_EVERY + 60, seed=8)
    whole = compute_indicators(raw).head(cut)
    assert compute_indicators(raw.head(cut)).equals(whole)


def test_missing_column_is_named_not_a_polars_error(long_candles: pl.DataFrame) -> None:
    with pytest.raises(RawDataError, match="column 'high' is missing"):
        compute_indicators(long_candles.drop("high"))


@pytest.mark.parametrize("price", [0.0123, 1.2345, 97.31, 3456.78])
def test_a_stale_quote_mid_series_has_zero_width_bands(price: float) -> None:
    # 30 identical candles after 700 random ones: the running window sums carry rounding from the
    # earlier rows, so E[x²] − E[x]² alone leaves noise (std ~1e-7 of the price at 3456.78)
    raw = make_candles(800, seed=3)
    row = pl.int_range(pl.len())
    raw = raw.with_columns(pl.when((row >= 700) & (row < 730)).then(price).otherwise(pl.col(c)).alias(c)
                           for c in ("open", "high", "low", "close"))
    ind = compute_indicators(raw)[719:730]
    assert (ind.get_column("bb_width") == 0.0).all()
    assert (ind.get_column("bb_percent") == 0.5).all()
    assert (ind.get_column("bb_middle") == price).all() and (ind.get_column("bb_upper") == price).all()
    assert compute_indicators(raw).get_column("bb_width")[718] > 0  # 19 identical closes: not yet


def test_indicators_work_where_numba_cannot_write_its_cache() -> None:
    # A read-only image with no writable home: numba finds no cache locator and refuses cache=True
    # at import. Simulated by allowing only the IPython locator, which declines outside IPython.
    code = ("import numpy as np; from patx_core.data.indicators import indicator_matrix; "
            "c = np.linspace(10, 20, 300); m = indicator_matrix(c + 1, c - 1, c, rsi_period=14, atr_period=14, "
            "ema_periods=(50, 200), bb_period=20, bb_stds=2.0); assert np.isfinite(m[:, 199:]).all()")
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "_IPythonCacheLocator"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "numba cannot cache _fill" in proc.stderr


def test_indicator_matrix_refuses_mismatched_columns_and_bad_periods() -> None:
    # numba does not bounds-check: a short high column would read past its end, bb_period 0 a later row
    close = np.linspace(10.0, 20.0, 300)
    periods = {"rsi_period": 14, "atr_period": 14, "ema_periods": (50, 200), "bb_period": 20, "bb_stds": 2.0}
    with pytest.raises(ValueError, match="high has shape"):
        indicator_matrix(close[:-1] + 1, close - 1, close, **periods)
    with pytest.raises(ValueError, match="bb_period must be an integer >= 1"):
        indicator_matrix(close + 1, close - 1, close, **(periods | {"bb_period": 0}))
    writable = close + 1
    indicator_matrix(writable, close - 1, close, **periods)
    assert writable.flags.writeable  # the caller's arrays are left as they were
