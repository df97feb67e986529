"""From validated candles to leak-free, normalized, windowed splits.

    raw ──build_feature_table──▶ every raw row: features, label, trade outcome
        ──split_dataset──▶ processed rows, chronological splits, purge, train-only scaler
        ──SplitDataset.to_windows──▶ WindowedData (strided views, no copies)

Leakage guards, each tested: splits are chronological and never shuffled; the last ``horizon``
rows of every split followed by another are purged, so no label's horizon reaches a later
split's prices; the scaler sees train rows only; a window ends at its label row and only looks
back (val/test windows may reach into earlier splits' features, which are past data).

Many symbols (a ``symbol`` column; a frame without one is a single series):

- Indicators, labels and windows are computed per symbol: no window and no label horizon
  crosses from one symbol into another (``exit_index`` counts rows of the symbol's own table).
- Splits use calendar cutoffs shared by every symbol, so a test period is one stretch of
  calendar time across the universe. The cutoffs cut the sorted distinct timestamps of the
  processed rows by the split fractions; for one symbol that is exactly its row arithmetic.
  The purge applies per symbol at each cutoff: a sample whose label horizon (its row +
  ``horizon`` in its own symbol) reaches the next cutoff is not a sample.
- A sample needs ``window_size - 1`` earlier processed rows of its own symbol, whatever its
  split, so a symbol that starts late (a ragged universe) simply has its first window later.
- The scaler is fitted on train rows only: per symbol for the price-level ``seed`` features
  (index points and a $30 stock share no scale), pooled for the scale-free ``relative`` ones.
  A symbol without train rows cannot be scaled per symbol and is left out, with a logged reason.
- Rows are ordered by (symbol, time), one model trains on the pooled windows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

import numpy as np
import polars as pl

from patx_core.settings.config import WARMUP_ROWS, DataConfig, LabelConfig, SplitConfig
from patx_core.data.features import compute_indicators, feature_columns, features_from_indicators
from patx_core.data.labels import triple_barrier
from patx_core.data.scaler import Scaler, UniverseScaler
from patx_core.data.universe import SYMBOL
from patx_core.data.contract import RawDataError, Violation, sequence_count, split_sizes
from patx_core.data.windows import WindowedData

__all__ = ["SplitDataset", "build_feature_table", "sequence_count", "split_at_cutoffs", "split_dataset", "split_sizes"]

logger = logging.getLogger(__name__)

# Trade-outcome columns of the feature table, after the features and the label.
OUTCOME_COLUMNS = ("exit_index", "exit_price", "trade_return", "holding", "exit_reason")


def build_feature_table(raw: pl.DataFrame, data: DataConfig, labels: LabelConfig) -> pl.DataFrame:
    """Every raw row with its features, label and trade outcome, computed per symbol.

    Columns: ``symbol`` (when ``raw`` has one; rows stay in ``raw``'s order), ``timestamp``, ``entry_price`` (the raw close the trade enters at), the feature set's
    14 columns, ``label`` (Int8, null where unknown: warm-up or horizon past the end),
    ``exit_index`` (Int64, row of this table), ``exit_price``, ``trade_return``, ``holding``
    (Int64) and ``exit_reason`` (Int8: 1 take-profit, -1 stop, 0 horizon); outcomes are null
    wherever the label is. Raises :class:`RawDataError` when the labels of the rows a model would
    train on come out all one class: no classifier can learn from that, and the fix is in the
    label config, not the model.
    """
    if SYMBOL in raw.columns:
        parts = [_symbol_table(part.drop(SYMBOL), data, labels).select(pl.lit(key[0], dtype=pl.String).alias(SYMBOL),
                                                                       pl.all())
                 for key, part in raw.group_by(SYMBOL, maintain_order=True)]
        table = pl.concat(parts)
    else:
        table = _symbol_table(raw, data, labels)
    _check_label_balance(table, data, labels)
    return table


def _symbol_table(raw: pl.DataFrame, data: DataConfig, labels: LabelConfig) -> pl.DataFrame:
    """:func:`build_feature_table` for one symbol's candles."""
    indicators = compute_indicators(raw)
    features = features_from_indicators(indicators, data.feature_set)
    result = triple_barrier(*(raw.get_column(c).to_numpy() for c in ("open", "high", "low", "close")),
                            indicators.get_column("atr_14").fill_null(np.nan).to_numpy(), labels)
    known = result.labelled
    table = features.select(
        "timestamp",
        raw.get_column("close").alias("entry_price"),
        *feature_columns(data.feature_set),
    ).with_columns(
        pl.Series("label", result.label, nan_to_null=True).cast(pl.Int8),
        pl.Series("exit_index", result.exit_index),
        pl.Series("exit_price", result.exit_price, nan_to_null=True),
        pl.Series("trade_return", result.trade_return, nan_to_null=True),
        pl.Series("holding", result.holding),
        pl.Series("exit_reason", result.exit_reason),
        pl.Series("_known", known),
    ).with_columns(
        # the numpy arrays hold -1/0 placeholders where no label exists; null says it plainly
        pl.when(pl.col("_known")).then(pl.col(c)).alias(c) for c in ("exit_index", "holding", "exit_reason")
    ).drop("_known")
    return table


def processed_mask(table: pl.DataFrame, columns: tuple[str, ...]) -> pl.Expr:
    """Rows a model can use: every feature present (not null, not NaN) and a label."""
    present = [pl.col(c).is_not_null() & pl.col(c).is_not_nan() for c in columns]
    return pl.all_horizontal(*present, pl.col("label").is_not_null())


def _check_label_balance(table: pl.DataFrame, data: DataConfig, labels: LabelConfig) -> None:
    processed = table.filter(processed_mask(table, feature_columns(data.feature_set)))
    if processed.height == 0:
        raise RawDataError("features", [Violation(
            "enough rows", "label", 0, (),
            f"no row has both features and a label: {table.height} rows, features start at row {WARMUP_ROWS} "
            f"and the last labels.horizon={labels.horizon} rows have no label")])
    positives = int(processed.get_column("label").sum())
    negatives = processed.height - positives
    if positives == 0 or negatives == 0:
        raise RawDataError("features", [Violation(
            "labels of both classes", "label", 0, (),
            f"labels are all one class: {positives} positive (take-profit first) and {negatives} negative "
            f"among {processed.height} labelled rows with take_profit={labels.take_profit}, "
            f"stop_loss={labels.stop_loss}, horizon={labels.horizon}; change labels.take_profit / "
            f"labels.stop_loss / labels.horizon (a closer take-profit, a wider stop or a longer horizon "
            f"makes positives more frequent)")])


@dataclass(frozen=True)
class SplitDataset:
    """Processed rows split chronologically, with the train-only scaler and normalized matrix.

    ``frame`` holds the processed rows in (symbol, time) order: table columns + ``label_end``
    (timestamp of the candle ``horizon`` rows after the row, in its own symbol), ``split`` and
    ``is_sample`` (labelled, not purged, a full window of its symbol's history); ``cutoffs[split]``
    is its half-open calendar range ``[start, end)`` (``end`` None for the last split);
    ``matrix`` is the (N, 14) float32 z-scored feature matrix every window is a view of;
    ``skipped`` names symbols left out and why.
    """

    frame: pl.DataFrame
    scaler: UniverseScaler
    matrix: np.ndarray
    cutoffs: dict[str, tuple[datetime, datetime | None]]
    feature_columns: tuple[str, ...]
    window_size: int
    horizon: int
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.cutoffs)

    @property
    def bounds(self) -> dict[str, tuple[int, int]]:
        """Half-open row range of each split in ``frame``: defined for a single series only,
        where every split is one contiguous block of rows."""
        return contiguous_bounds(self.frame, self.splits)

    def sample_rows(self, split: str) -> np.ndarray:
        """int64 rows of ``frame`` (= rows of ``matrix``) that are samples of ``split``, ascending."""
        if split not in self.cutoffs:
            raise ValueError(f"unknown split {split!r}; this dataset has {self.splits}")
        mask = (self.frame.get_column("split") == split) & self.frame.get_column("is_sample")
        return mask.arg_true().to_numpy().astype(np.int64)

    def to_windows(self) -> WindowedData:
        """The training/evaluation view: no copy of ``matrix``; windows are strided views."""
        return windows_from_frame(self.frame, self.scaler, self.window_size, matrix=self.matrix)


def contiguous_bounds(frame: pl.DataFrame, splits: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Each split's half-open row range, for a frame of one series; ``ValueError`` for a universe."""
    split = frame.get_column("split").to_numpy()
    bounds: dict[str, tuple[int, int]] = {}
    for name in splits:
        rows = np.flatnonzero(split == name)
        if rows.size and rows[-1] - rows[0] + 1 != rows.size:
            raise ValueError(f"split {name!r} is not one block of rows (a many-symbol frame); use cutoffs")
        bounds[name] = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)
    return bounds


def windows_from_frame(frame: pl.DataFrame, scaler: UniverseScaler | Scaler, window_size: int, *,
                       matrix: np.ndarray | None = None) -> WindowedData:
    """The windowed view of a splits frame (``split``/``is_sample`` columns), e.g. one read back
    from storage; ``matrix`` skips re-normalizing when the caller already has it."""
    if isinstance(scaler, Scaler):
        scaler = UniverseScaler(feature_columns=scaler.feature_columns, pooled=scaler)
    if matrix is None:
        matrix = scaler.transform_frame(frame)  # (N, F) float32
    # a writable copy: polars hands out read-only buffers, which torch.from_numpy warns about
    labels = np.array(frame.get_column("label").cast(pl.Float32).fill_null(np.nan).to_numpy())
    split = frame.get_column("split").to_numpy()
    is_sample = frame.get_column("is_sample").to_numpy()
    ends = {s: np.flatnonzero(is_sample & (split == s)).astype(np.int64) for s in dict.fromkeys(split)}
    return WindowedData(matrix=matrix, labels=labels, ends=ends, window_size=window_size,
                        feature_columns=scaler.feature_columns)


def calendar_cutoffs(timestamps: pl.Series, split: SplitConfig) -> dict[str, tuple[datetime, datetime | None]]:
    """Shared calendar cutoffs: the distinct sorted ``timestamps`` cut by :func:`split_sizes`.

    Each split is ``[start, end)``; the last one is open-ended. A split with no calendar day
    gets ``start == end`` (its caller refuses it as empty).
    """
    calendar = timestamps.unique().sort()
    n = calendar.len()
    sizes = split_sizes(n, split)
    cutoffs: dict[str, tuple[datetime, datetime | None]] = {}
    names = split.names
    start = 0
    last_ts = calendar[n - 1] if n else None
    for i, name in enumerate(names):
        end = start + sizes[name]
        lo = calendar[start] if start < n else last_ts
        hi = None if i == len(names) - 1 else (calendar[end] if end < n else last_ts)
        cutoffs[name] = (lo, hi)
        start = end
    return cutoffs


def split_dataset(table: pl.DataFrame, split: SplitConfig, labels: LabelConfig, data: DataConfig) -> SplitDataset:
    """Chronological, purged train/val(/test) splits of the processed rows of a feature table.

    Processed rows are those with every feature and a label: per symbol, a contiguous block from
    its first row with all indicators (199) to ``horizon`` rows before its end. The calendar
    cutoffs follow :func:`calendar_cutoffs`; for one series the samples per split are exactly
    :func:`sequence_count` (purge of the last ``horizon`` rows before each cutoff,
    ``window_size − 1`` rows of history for the first split). The scaler is fitted on all train
    rows (features only: purged rows' features are train-period prices too) and applied to every
    row. See the module docstring for the many-symbol rules.
    """
    frame, has_symbol = _processed_frame(table, labels, data)
    cutoffs = calendar_cutoffs(frame.get_column("timestamp"), split)
    return _split_processed(frame, has_symbol, cutoffs, labels, data)


def split_at_cutoffs(table: pl.DataFrame, cutoffs: Mapping[str, tuple[datetime, datetime | None]],
                     labels: LabelConfig, data: DataConfig) -> SplitDataset:
    """:func:`split_dataset` at explicit calendar cutoffs ``{split: [start, end)}``, in order.

    The first split's name is the one the scaler is fitted on (``"train"``). Processed rows
    before the first start or at/after the last end (when not None) are dropped; every split
    followed by another is purged at the next start, as in :func:`split_dataset`. A last split
    with a finite end is *not* purged here: a caller that needs its label horizons to stay inside
    it (a walk-forward fold's test period) nulls those labels first.
    """
    names = tuple(cutoffs)
    if not names:
        raise ValueError("split_at_cutoffs: no split given")
    for a, b in zip(names, names[1:]):
        if cutoffs[a][1] != cutoffs[b][0]:
            raise ValueError(f"split_at_cutoffs: split {a!r} ends at {cutoffs[a][1]} but {b!r} starts at "
                             f"{cutoffs[b][0]}; splits must be back to back")
    frame, has_symbol = _processed_frame(table, labels, data)
    first, last_end = cutoffs[names[0]][0], cutoffs[names[-1]][1]
    inside = pl.col("timestamp") >= first
    if last_end is not None:
        inside = inside & (pl.col("timestamp") < last_end)
    return _split_processed(frame.filter(inside), has_symbol, dict(cutoffs), labels, data)


def _processed_frame(table: pl.DataFrame, labels: LabelConfig, data: DataConfig) -> tuple[pl.DataFrame, bool]:
    """The processed rows with ``symbol``, ``label_end`` and ``_row``; whether ``table`` had symbols."""
    columns = feature_columns(data.feature_set)
    missing = [c for c in ("timestamp", "label", *columns) if c not in table.columns]
    if missing:
        raise ValueError(f"split_dataset: the feature table lacks column(s) {missing} for "
                         f"data.feature_set={data.feature_set!r}; build it with build_feature_table")
    has_symbol = SYMBOL in table.columns
    if not has_symbol:
        table = table.with_columns(pl.lit("", dtype=pl.String).alias(SYMBOL))
    table = table.with_columns(
        pl.col("timestamp").shift(-labels.horizon).over(SYMBOL).alias("label_end"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
        processed_mask(table, columns).alias("_keep"))
    _require_contiguous(table)
    return table.filter(pl.col("_keep")).drop("_keep"), has_symbol


def _split_processed(frame: pl.DataFrame, has_symbol: bool, cutoffs: dict[str, tuple[datetime, datetime | None]],
                     labels: LabelConfig, data: DataConfig) -> SplitDataset:
    """Assign splits by ``cutoffs``, fit the train-only scaler, mark the purged samples."""
    columns = feature_columns(data.feature_set)
    longest = frame.group_by(SYMBOL).len().get_column("len").max() if frame.height else 0
    if data.window_size > (longest or 0):
        raise ValueError(f"data.window_size={data.window_size} is longer than the {longest or 0} processed rows "
                         f"(rows with all features and a label); use a shorter window or more data")

    names = tuple(cutoffs)
    which: pl.Expr = pl.lit(names[-1], dtype=pl.String)
    for name in reversed(names[:-1]):
        which = pl.when(pl.col("timestamp") < cutoffs[name][1]).then(pl.lit(name, dtype=pl.String)).otherwise(which)
    frame = frame.with_columns(which.alias("split"))
    scaler, frame, skipped = _fit_scaler(frame, columns, data.feature_set, names[0])

    is_sample = pl.int_range(pl.len()).over(SYMBOL) >= data.window_size - 1
    for name in names[:-1]:
        next_start = cutoffs[names[names.index(name) + 1]][0]
        is_sample = is_sample & ((pl.col("split") != name) | (pl.col("label_end") < next_start))
    frame = frame.with_columns(is_sample.alias("is_sample"))
    _require_samples(frame, names, data, labels)
    keep_cols = [c for c in frame.columns if c != "_row" and (has_symbol or c != SYMBOL)]
    out = frame.select(keep_cols)
    matrix = scaler.transform_frame(out)
    return SplitDataset(frame=out, scaler=scaler, matrix=matrix, cutoffs=cutoffs, feature_columns=columns,
                        window_size=data.window_size, horizon=labels.horizon, skipped=skipped)


def _require_contiguous(table: pl.DataFrame) -> None:
    """A hole in a symbol's processed rows would make a window silently span missing candles."""
    kept = table.filter(pl.col("_keep")).select(
        SYMBOL, "_row", (pl.col("_row").diff().over(SYMBOL) > 1).alias("_gap"))
    gaps = kept.filter(pl.col("_gap"))
    if gaps.height:
        row, symbol = int(gaps["_row"][0]), gaps[SYMBOL][0]
        previous = int(kept.filter((pl.col(SYMBOL) == symbol) & (pl.col("_row") < row))["_row"].max())
        where = f" of symbol {symbol!r}" if symbol else ""
        raise ValueError(f"split_dataset: processed rows{where} are not contiguous: table row {previous} "
                         f"is followed by row {row} (missing features or label in between)")


def _fit_scaler(frame: pl.DataFrame, columns: tuple[str, ...], feature_set: str,
                train: str) -> tuple[UniverseScaler, pl.DataFrame, dict[str, str]]:
    """The train-only scaler (per symbol for ``seed``, pooled otherwise) and the rows it can scale."""
    is_train = pl.col("split") == train
    symbols = frame.get_column(SYMBOL).unique(maintain_order=True).to_list()
    if feature_set != "seed" or len(symbols) == 1:
        values = frame.filter(is_train).select(columns).to_numpy()
        return UniverseScaler(feature_columns=columns, pooled=Scaler.fit(values, columns)), frame, {}
    # Every symbol's train statistics in one grouped pass (population std, as Scaler.fit).
    stats = frame.filter(is_train).group_by(SYMBOL).agg(
        *(pl.col(c).mean().alias(f"mean:{c}") for c in columns), *(pl.col(c).std(ddof=0).alias(f"std:{c}") for c in columns))
    by_symbol = {row[SYMBOL]: row for row in stats.iter_rows(named=True)}
    per_symbol: dict[str, Scaler] = {}
    skipped: dict[str, str] = {}
    for symbol in symbols:
        if symbol not in by_symbol:
            skipped[symbol] = ("skipped: no rows before the first calendar cutoff, so no train rows to fit "
                               "its per-symbol scaler (the price-level 'seed' features are scaled per symbol)")
            logger.warning("symbol %r %s", symbol, skipped[symbol])
            continue
        row = by_symbol[symbol]
        std = np.array([row[f"std:{c}"] for c in columns], dtype=np.float64)
        bad = [c for c, v in zip(columns, std) if not np.isfinite(v) or v <= 0]
        if bad:
            raise ValueError(f"symbol {symbol!r}: feature(s) {bad} have zero (or non-finite) std over its train rows; "
                             "a constant feature cannot be z-scored")
        per_symbol[symbol] = Scaler(mean=np.array([row[f"mean:{c}"] for c in columns], dtype=np.float64), std=std,
                                    feature_columns=columns)
    if not per_symbol:
        raise ValueError("split_dataset: no symbol has train rows to fit its scaler")
    frame = frame.filter(pl.col(SYMBOL).is_in(list(per_symbol)))
    return UniverseScaler(feature_columns=columns, per_symbol=per_symbol), frame, skipped


def _require_samples(frame: pl.DataFrame, names: tuple[str, ...], data: DataConfig, labels: LabelConfig) -> None:
    counts = frame.group_by("split").agg(pl.len().alias("rows"), pl.col("is_sample").sum().alias("samples"))
    by_split = {r["split"]: r for r in counts.iter_rows(named=True)}
    n = frame.height
    for i, name in enumerate(names):
        first, last = i == 0, i == len(names) - 1
        rows = by_split.get(name, {}).get("rows", 0)
        count = by_split.get(name, {}).get("samples", 0)
        if count == 0:
            raise ValueError(
                f"split {name!r} has 0 samples: {rows} of {n} processed rows"
                f"{f' minus data.window_size-1={data.window_size - 1} rows of history' if first else ''}"
                f"{f' minus the labels.horizon={labels.horizon} purged rows' if not last else ''}; "
                f"raise split.{name}, shorten data.window_size / labels.horizon, or use more data")
        logger.info("split %s: %d rows, %d samples", name, rows, count)
