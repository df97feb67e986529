"""The 14 model inputs per candle: the guide's TA-Lib indicators, or their scale-free version.

Two feature sets with the same column count and order, so the model is unchanged:

``seed`` (:data:`FEATURE_COLUMNS`) — the guide's columns, TA-Lib's definitions exactly:
    RSI(14)  Wilder smoothing (alpha 1/14) seeded by the simple mean of the first 14 gains/losses
             (close-to-close changes from the second bar); 0 where both averages are 0, as TA-Lib
             (TA-Lib tests "< 1e-8" rather than "== 0"; the exact test keeps sub-cent prices sane).
    ATR(14)  true range from the second bar, Wilder-smoothed, seeded by the mean of the first 14 TRs.
    EMA(N)   alpha 2/(N+1) seeded by the SMA of the first N closes.
    BB(20,2) middle = SMA(20), upper/lower = middle ± 2 population std (ddof 0, as E[x²] − E[x]²
             like TA-Lib); ``bb_width = (upper - lower) / middle``, ``bb_percent = (close - lower) / (upper - lower)``
             and 0.5 (the middle) when the band has zero width, i.e. 20 identical closes.
    First values (TA-Lib lookbacks): RSI/ATR row 14, BB row 19, EMA50 row 49, EMA200 row 199.
    The loops that compute them (one compiled pass, TA-Lib's operation order) are in
    :mod:`patx_core.data.indicators`.

``relative`` (:data:`RELATIVE_FEATURE_COLUMNS`) — every price expressed against the row's own
close, so a model trained on one price level still applies at another (a trending index leaves
its train range; raw levels z-scored with train statistics then reach |z| ≫ 5):
    open/high/low, EMA50/200, BB middle/upper/lower   x / close − 1
    close                                             log(close_t / close_{t-1})
    atr_14                                            atr_14 / close
    volume                                            log(volume / its trailing 20-candle mean);
                                                      0 (a typical candle) where the volume is 0:
                                                      a zero print is a missing value in index and
                                                      FX feeds (the NASDAQ sample has two), and
                                                      log(0) = −inf would wreck the z-scores
    rsi_14, bb_width, bb_percent                      unchanged (already scale-free)

Everything is causal: a value at row t uses rows ≤ t only, so computing on any prefix of a
series gives the same values as on the whole of it.
"""

from __future__ import annotations

import polars as pl

from patx_core.settings.config import FEATURE_SETS
from patx_core.data.contract import RAW_COLUMNS, RawDataError, Violation

FEATURE_COLUMNS: tuple[str, ...] = (
    "open", "high", "low", "close", "volume", "rsi_14", "atr_14", "ema_50", "ema_200",
    "bb_middle", "bb_upper", "bb_lower", "bb_width", "bb_percent",
)
RELATIVE_FEATURE_COLUMNS: tuple[str, ...] = (
    "open_rel", "high_rel", "low_rel", "close_logret", "volume_logratio_20", "rsi_14", "atr_14_rel",
    "ema_50_rel", "ema_200_rel", "bb_middle_rel", "bb_upper_rel", "bb_lower_rel", "bb_width",
    "bb_percent",
)

RSI_PERIOD = 14
ATR_PERIOD = 14
EMA_PERIODS = (50, 200)
BB_PERIOD = 20
BB_STDS = 2.0
VOLUME_PERIOD = 20

# compute_indicators' names for the rows of indicator_matrix (in INDICATOR_ROWS' order).
_INDICATOR_NAMES = ("rsi_14", "atr_14", *(f"ema_{n}" for n in EMA_PERIODS), "bb_middle", "bb_upper", "bb_lower",
                    "bb_width", "bb_percent")

# Columns that are price levels and become x / close - 1 in the relative set.
_LEVEL_COLUMNS = ("open", "high", "low", "ema_50", "ema_200", "bb_middle", "bb_upper", "bb_lower")


def feature_columns(feature_set: str) -> tuple[str, ...]:
    """The 14 column names of ``feature_set`` ("seed" or "relative"), in model-input order."""
    if feature_set == "seed":
        return FEATURE_COLUMNS
    if feature_set == "relative":
        return RELATIVE_FEATURE_COLUMNS
    raise ValueError(f"feature_set must be one of {FEATURE_SETS}, got {feature_set!r}")


def compute_indicators(raw: pl.DataFrame) -> pl.DataFrame:
    """``timestamp`` + :data:`FEATURE_COLUMNS` for every raw row, in the same order.

    Each indicator is null inside its TA-Lib warm-up (see the module docstring); ``raw`` is a
    frame that passed :func:`patx_core.data.contract.validate_raw`.
    """
    # imported here: numba's import (~0.3 s) is paid by the processes that compute features, not by
    # every one that imports this module for its column names (the Dagster code location)
    from patx_core.data.indicators import indicator_matrix

    _require_raw_columns(raw)
    matrix = indicator_matrix(
        *(raw.get_column(c).to_numpy() for c in ("high", "low", "close")), rsi_period=RSI_PERIOD,
        atr_period=ATR_PERIOD, ema_periods=EMA_PERIODS, bb_period=BB_PERIOD, bb_stds=BB_STDS)
    # NaN marks the warm-up only (inputs are finite and positive); null is what the rest of the
    # pipeline reads as "no value yet".
    computed = [pl.Series(name, row, nan_to_null=True) for name, row in zip(_INDICATOR_NAMES, matrix, strict=True)]
    return raw.select(*RAW_COLUMNS).with_columns(computed).select("timestamp", *FEATURE_COLUMNS)


def relative_features(indicators: pl.DataFrame) -> pl.DataFrame:
    """``timestamp`` + :data:`RELATIVE_FEATURE_COLUMNS` from a :func:`compute_indicators` frame.

    Separate from :func:`compute_features` so a caller that also needs the raw ATR (the labels)
    computes the indicators once.
    """
    close, volume = pl.col("close"), pl.col("volume")
    trailing = volume.rolling_mean(VOLUME_PERIOD)
    rel = indicators.lazy().select(
        "timestamp",
        *((pl.col(c) / close - 1.0).alias(f"{c}_rel") for c in _LEVEL_COLUMNS),
        (close / close.shift(1)).log().alias("close_logret"),
        pl.when(volume > 0).then((volume / trailing).log()).otherwise(pl.when(trailing.is_not_null()).then(0.0))
        .alias("volume_logratio_20"),
        (pl.col("atr_14") / close).alias("atr_14_rel"),
        "rsi_14", "bb_width", "bb_percent",
    )
    return rel.select("timestamp", *RELATIVE_FEATURE_COLUMNS).collect()


def features_from_indicators(indicators: pl.DataFrame, feature_set: str) -> pl.DataFrame:
    """``timestamp`` + ``feature_set``'s 14 columns, given :func:`compute_indicators`' output."""
    columns = feature_columns(feature_set)
    if feature_set == "relative":
        return relative_features(indicators)
    return indicators.select("timestamp", *columns)


def compute_features(raw: pl.DataFrame, feature_set: str) -> pl.DataFrame:
    """``timestamp`` + the 14 columns of ``feature_set`` for every raw row (null in warm-up)."""
    feature_columns(feature_set)  # reject an unknown set before computing anything
    return features_from_indicators(compute_indicators(raw), feature_set)


def _require_raw_columns(raw: pl.DataFrame) -> None:
    """A frame that skipped validation fails here by name, not deep inside a polars plan."""
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise RawDataError("compute_indicators", [
            Violation("required columns", c, 0, (), f"column '{c}' is missing; the frame has {raw.columns} "
                      "(validate it with patx_core.data.contract.validate_raw first)") for c in missing])
