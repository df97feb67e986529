"""From validated candles to leak-free, normalized, windowed splits.

    raw ──build_feature_table──▶ every raw row: features, label, trade outcome
        ──split_dataset──▶ processed rows, chronological splits, purge, train-only scaler
        ──SplitDataset.to_windows──▶ WindowedData (strided views, no copies)

Leakage guards, each tested: splits are chronological and never shuffled; the last ``horizon``
rows of every split followed by another are purged, so no label's horizon reaches a later
split's prices; the scaler sees train rows only; a window ends at its label row and only looks
back (val/test windows may reach into earlier splits' features, which are past data).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from patx_core.config import WARMUP_ROWS, DataConfig, LabelConfig, SplitConfig
from patx_core.features import compute_indicators, feature_columns, features_from_indicators
from patx_core.labels import triple_barrier
from patx_core.scaler import Scaler
from patx_core.validation import RawDataError, Violation, sequence_count, split_sizes
from patx_core.windows import WindowedData

__all__ = ["SplitDataset", "build_feature_table", "sequence_count", "split_dataset", "split_sizes"]

logger = logging.getLogger(__name__)

# Trade-outcome columns of the feature table, after the features and the label.
OUTCOME_COLUMNS = ("exit_index", "exit_price", "trade_return", "holding", "exit_reason")


def build_feature_table(raw: pl.DataFrame, data: DataConfig, labels: LabelConfig) -> pl.DataFrame:
    """Every raw row with its features, label and trade outcome.

    Columns: ``timestamp``, ``entry_price`` (the raw close the trade enters at), the feature set's
    14 columns, ``label`` (Int8, null where unknown: warm-up or horizon past the end),
    ``exit_index`` (Int64, row of this table), ``exit_price``, ``trade_return``, ``holding``
    (Int64) and ``exit_reason`` (Int8: 1 take-profit, -1 stop, 0 horizon); outcomes are null
    wherever the label is. Raises :class:`RawDataError` when the labels of the rows a model would
    train on come out all one class: no classifier can learn from that, and the fix is in the
    label config, not the model.
    """
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
    _check_label_balance(table, data, labels)
    return table


def _processed_mask(table: pl.DataFrame, columns: tuple[str, ...]) -> pl.Expr:
    """Rows a model can use: every feature present (not null, not NaN) and a label."""
    present = [pl.col(c).is_not_null() & pl.col(c).is_not_nan() for c in columns]
    return pl.all_horizontal(*present, pl.col("label").is_not_null())


def _check_label_balance(table: pl.DataFrame, data: DataConfig, labels: LabelConfig) -> None:
    processed = table.filter(_processed_mask(table, feature_columns(data.feature_set)))
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

    ``frame`` holds the processed rows (table columns + ``split`` and ``is_sample``: labelled, not
    purged, a full window of history); ``bounds[split]`` is its half-open row range in ``frame``;
    ``matrix`` is the (N, 14) float32 z-scored feature matrix every window is a view of.
    """

    frame: pl.DataFrame
    scaler: Scaler
    matrix: np.ndarray
    bounds: dict[str, tuple[int, int]]
    feature_columns: tuple[str, ...]
    window_size: int
    horizon: int

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.bounds)

    def sample_rows(self, split: str) -> np.ndarray:
        """int64 rows of ``frame`` (= rows of ``matrix``) that are samples of ``split``, ascending."""
        if split not in self.bounds:
            raise ValueError(f"unknown split {split!r}; this dataset has {self.splits}")
        start, end = self.bounds[split]
        is_sample = self.frame.get_column("is_sample").slice(start, end - start).to_numpy()
        return (np.flatnonzero(is_sample) + start).astype(np.int64)

    def to_windows(self) -> WindowedData:
        """The training/evaluation view: no copy of ``matrix``; windows are strided views."""
        return windows_from_frame(self.frame, self.scaler, self.window_size, matrix=self.matrix)


def windows_from_frame(frame: pl.DataFrame, scaler: Scaler, window_size: int, *,
                       matrix: np.ndarray | None = None) -> WindowedData:
    """The windowed view of a splits frame (``split``/``is_sample`` columns), e.g. one read back
    from storage; ``matrix`` skips re-normalizing when the caller already has it."""
    if matrix is None:
        matrix = scaler.transform(frame.select(scaler.feature_columns).to_numpy())  # (N, F) float32
    # a writable copy: polars hands out read-only buffers, which torch.from_numpy warns about
    labels = np.array(frame.get_column("label").cast(pl.Float32).fill_null(np.nan).to_numpy())
    split = frame.get_column("split").to_numpy()
    is_sample = frame.get_column("is_sample").to_numpy()
    ends = {s: np.flatnonzero(is_sample & (split == s)).astype(np.int64) for s in dict.fromkeys(split)}
    return WindowedData(matrix=matrix, labels=labels, ends=ends, window_size=window_size,
                        feature_columns=scaler.feature_columns)


def split_dataset(table: pl.DataFrame, split: SplitConfig, labels: LabelConfig, data: DataConfig) -> SplitDataset:
    """Chronological train/val(/test) splits of the processed rows of a feature table.

    Processed rows are those with every feature and a label: a contiguous block from the first
    row with all indicators (199) to ``horizon`` rows before the end. Sizes follow
    :func:`split_sizes`; samples per split follow :func:`sequence_count` (purge of the last
    ``horizon`` rows before each boundary, ``window_size − 1`` rows of history for the first
    split). The scaler is fitted on all train rows (features only: purged rows' features are
    train-period prices too) and applied to every row.
    """
    columns = feature_columns(data.feature_set)
    missing = [c for c in ("timestamp", "label", *columns) if c not in table.columns]
    if missing:
        raise ValueError(f"split_dataset: the feature table lacks column(s) {missing} for "
                         f"data.feature_set={data.feature_set!r}; build it with build_feature_table")
    keep = table.select(_processed_mask(table, columns)).to_series()
    rows = keep.arg_true()
    if rows.len() and rows[-1] - rows[0] + 1 != rows.len():
        # A hole would make a window silently span missing candles.
        gaps = (rows.diff() > 1).arg_true()
        raise ValueError(f"split_dataset: processed rows are not contiguous: table row {rows[gaps[0] - 1]} "
                         f"is followed by row {rows[gaps[0]]} (missing features or label in between)")
    frame = table.filter(keep)
    n = frame.height
    if data.window_size > n:
        raise ValueError(f"data.window_size={data.window_size} is longer than the {n} processed rows "
                         f"(rows with all features and a label); use a shorter window or more data")

    names = split.names
    sizes = split_sizes(n, split)
    bounds: dict[str, tuple[int, int]] = {}
    start = 0
    for name in names:
        bounds[name] = (start, start + sizes[name])
        start += sizes[name]
    is_sample = np.zeros(n, dtype=bool)
    for i, name in enumerate(names):
        first, last = i == 0, i == len(names) - 1
        lo, hi = bounds[name]
        count = sequence_count(hi - lo, data.window_size, labels.horizon, first=first, last=last)
        if count == 0:
            raise ValueError(
                f"split {name!r} has 0 samples: {hi - lo} of {n} processed rows"
                f"{f' minus data.window_size-1={data.window_size - 1} rows of history' if first else ''}"
                f"{f' minus the labels.horizon={labels.horizon} purged rows' if not last else ''}; "
                f"raise split.{name}, shorten data.window_size / labels.horizon, or use more data")
        sample_lo = lo + (data.window_size - 1 if first else 0)
        sample_hi = hi - (0 if last else labels.horizon)
        is_sample[sample_lo:sample_hi] = True
        logger.info("split %s: rows %d..%d (%d rows), %d samples", name, lo, hi, hi - lo, count)

    split_col = np.repeat(np.array(names), [sizes[s] for s in names])
    frame = frame.with_columns(pl.Series("split", split_col, dtype=pl.String), pl.Series("is_sample", is_sample))
    values = frame.select(columns).to_numpy()
    train_lo, train_hi = bounds[names[0]]
    scaler = Scaler.fit(values[train_lo:train_hi], columns)
    matrix = scaler.transform(values)
    return SplitDataset(frame=frame, scaler=scaler, matrix=matrix, bounds=bounds, feature_columns=columns,
                        window_size=data.window_size, horizon=labels.horizon)
