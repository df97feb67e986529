"""The data steps: raw prices (validated), features, purged splits + scaler, windows; and their checks."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import numpy as np
import polars as pl

from patx_core.storage.artifacts import atomic_write_json, read_json
from patx_core.storage.jsonsafe import iso
from patx_core.evaluation.record import split_summaries
from patx_core.settings.grid import GridCell
from patx_core.data.scaler import UniverseScaler
from patx_core.data.universe import SYMBOL
from patx_core.pipeline.step import CheckOutcome, StepResult

POSITIVE_RATE_RANGE = (0.05, 0.95)

log = logging.getLogger(__name__)


def _date_range(frame: pl.DataFrame) -> dict[str, Any]:
    return {"first_timestamp": iso(frame["timestamp"].min()), "last_timestamp": iso(frame["timestamp"].max())}


# --------------------------------------------------------------------------------------- data


def load_raw_prices(cell: GridCell, *, now: datetime | None = None) -> StepResult:
    """Read and validate the dataset per symbol; refuses (``RawDataError``) before anything is written.

    Symbols with too few rows for the variant are skipped (logged, and listed in the metadata);
    the candle spacing is checked against the dataset's interval. What was read (files, sha256,
    symbols, spacing) goes to ``work/<variant>/input.json`` for the evaluation to record.
    """
    from patx_core.data.universe import check_interval, read_universe, source_digest
    from patx_core.data.contract import describe_row_requirement, required_rows

    variant, dataset = cell.variant, cell.dataset
    settings = (variant.data, variant.labels, variant.split)
    files = cell.input_files()
    if not files:
        from patx_core.data.contract import RawDataError, Violation

        where = (f"drop candle files into {dataset.landing} and materialize ingested_candles" if dataset.landing
                 else f"its source {dataset.source!r} matches no file")
        raise RawDataError(f"dataset {dataset.name!r}", [Violation("file exists", "", 0, (),
                                                                   f"no candles to read yet: {where}")])
    universe = read_universe(files, min_rows=required_rows(*settings), symbol=dataset.symbol or None,
                             volume=dataset.volume, min_rows_for=f"variant {variant.name!r}: {describe_row_requirement(*settings)}")
    raw = universe.frame
    spacing = check_interval(raw, dataset.interval_seconds, dataset=dataset.name, interval=dataset.interval)
    newest = dict(raw.group_by(SYMBOL, maintain_order=True).agg(pl.col("timestamp").max()).iter_rows())
    info = {"name": dataset.name, "symbols": universe.symbols, "interval": dataset.interval,
            "median_spacing_seconds": spacing, "source_sha256": source_digest(files),
            "source": [str(f) for f in files], "rows": raw.height, "skipped_symbols": universe.skipped,
            **_date_range(raw)}
    atomic_write_json(cell.paths.input_json, info)
    # read_universe validated every symbol (pandera schema + invariants, after normalization) or
    # raised, so the check records that outcome rather than validating it a second time.
    schema_check = CheckOutcome(
        "raw_prices_schema", True, {"columns": {c: str(t) for c, t in raw.schema.items()}, "rows": raw.height,
                                    "symbols": len(universe.symbols)},
        "pandera RawPricesSchema and the OHLC/timestamp invariants hold for every symbol")
    meta = {"dagster/row_count": raw.height, "dataset": dataset.name, "symbols": universe.symbols,
            "skipped_symbols": universe.skipped, "input_sha256": info["source_sha256"],
            "input_files": info["source"], "median_spacing": _duration(spacing),
            "newest_candle": {s: iso(t) for s, t in newest.items()}, **_date_range(raw)}
    return StepResult(value=raw, metadata=meta,
                      checks=[schema_check, freshness_check(newest, dataset.max_staleness, now=now)])


def _duration(seconds: float | None) -> str | None:
    from patx_core.data.intervals import format_interval

    return None if seconds is None else format_interval(seconds)


def freshness_check(newest: dict[str, datetime], max_staleness: str, *, now: datetime | None = None) -> CheckOutcome:
    """``raw_prices_fresh``: every symbol's newest candle is at most ``max_staleness`` old."""
    from patx_core.data.intervals import format_duration
    from patx_core.settings.durations import parse_duration

    if not max_staleness:
        return CheckOutcome("raw_prices_fresh", True, {"max_staleness": None},
                            "no max_staleness set for this dataset: freshness not checked")
    now = now or datetime.now(timezone.utc)
    limit = parse_duration(max_staleness)
    age = {s: (now - t).total_seconds() for s, t in newest.items()}
    stale = {s: a for s, a in age.items() if a > limit}
    meta = {"max_staleness": max_staleness, "now": now.isoformat(),
            "age_by_symbol": {s: format_duration(max(a, 0.0)) for s, a in age.items()},
            "stale_symbols": sorted(stale)}
    if not stale:
        oldest = max(age.values()) if age else 0.0
        return CheckOutcome("raw_prices_fresh", True, meta,
                            f"newest candles at most {format_duration(max(oldest, 0.0))} old (limit {max_staleness})")
    worst = max(stale, key=stale.__getitem__)
    return CheckOutcome("raw_prices_fresh", False, meta,
                        f"{len(stale)} symbol(s) stale: {worst!r}'s newest candle is {format_duration(stale[worst])} old, "
                        f"{format_duration(stale[worst] - limit)} past max_staleness={max_staleness}")


def build_features(raw: pl.DataFrame, cell: GridCell) -> StepResult:
    """Features, triple-barrier labels and trade outcomes for every raw row, per symbol."""
    from patx_core.data.splits import build_feature_table
    from patx_core.data.features import feature_columns

    variant = cell.variant
    table = build_feature_table(raw, variant.data, variant.labels)
    cols = list(feature_columns(variant.data.feature_set))
    # Per symbol, the rows from its first complete feature row on must all be finite.
    started = pl.all_horizontal(pl.col(cols).is_not_null()).cum_max().over(SYMBOL) if SYMBOL in table.columns \
        else pl.all_horizontal(pl.col(cols).is_not_null()).cum_max()
    after_warmup = table.filter(started)
    bad = after_warmup.select(
        [(pl.col(c).is_null() | ~pl.col(c).is_finite()).sum().alias(c) for c in cols]).row(0, named=True)
    bad = {c: int(n) for c, n in bad.items() if n}
    labelled = table["label"].drop_nulls()
    pos_rate = float(labelled.mean()) if labelled.len() else float("nan")
    lo, hi = POSITIVE_RATE_RANGE
    checks = [
        CheckOutcome("features_finite", not bad, {"bad_values_by_column": bad, "rows_checked": after_warmup.height},
                     "no null/inf after warm-up" if not bad else f"null/inf after warm-up in {bad}"),
        CheckOutcome("features_label_positive_rate", lo <= pos_rate <= hi,
                     {"positive_rate": pos_rate, "labelled_rows": labelled.len(), "range": [lo, hi]},
                     f"positive rate {pos_rate:.3f} (allowed [{lo}, {hi}])"),
    ]
    meta = {"dagster/row_count": table.height, "feature_set": variant.data.feature_set,
            "feature_columns": cols, "labelled_rows": labelled.len(), "positive_rate": pos_rate,
            "first_complete_timestamp": iso(after_warmup["timestamp"].min()), **_date_range(table)}
    return StepResult(value=table, metadata=meta, checks=checks)


def build_splits(table: pl.DataFrame, cell: GridCell) -> StepResult:
    """Calendar-cut purged splits; the scaler (fitted on train rows only) goes to the work dir."""
    from patx_core.data.splits import split_dataset

    variant = cell.variant
    ds = split_dataset(table, variant.split, variant.labels, variant.data)
    atomic_write_json(cell.paths.scaler_json, ds.scaler.to_plain())
    if ds.skipped:
        # Symbols the splits left out (no train rows for their own scaler) are not in the model:
        # the input record says so, for the evaluation and the report.
        info = cell.input_info()
        info["symbols"] = [s for s in info["symbols"] if s not in ds.skipped]
        info["skipped_symbols"] = {**info["skipped_symbols"], **ds.skipped}
        atomic_write_json(cell.paths.input_json, info)
    frame = ds.frame
    summary = split_summaries(frame, variant.split.names)
    scalers = [ds.scaler.pooled] if ds.scaler.pooled is not None else list((ds.scaler.per_symbol or {}).values())
    min_std = min(float(sc.std.min()) for sc in scalers)
    checks = [purge_check(frame, ds.cutoffs, variant.labels.horizon),
              CheckOutcome("splits_scaler_std_positive", min_std > 0,
                           {"min_std": min_std, "per_symbol": not ds.scaler.is_pooled},
                           "scaler fitted on train rows only; every std > 0")]
    meta = {"dagster/row_count": frame.height, "splits": summary,
            "cutoffs": {k: [iso(a), iso(b)] for k, (a, b) in ds.cutoffs.items()},
            "scaler": "per symbol" if not ds.scaler.is_pooled else "pooled",
            "skipped_symbols": ds.skipped}
    return StepResult(value=frame, metadata=meta, checks=checks)


def purge_check(frame: pl.DataFrame, cutoffs: dict[str, tuple[datetime, datetime | None]],
                horizon: int) -> CheckOutcome:
    """Splits follow their shared calendar cutoffs in order, and no sample's label horizon (in its
    own symbol) reaches the next split's first candle."""
    order = [s for s in ("train", "val", "test") if s in cutoffs]
    problems: list[str] = []
    for a, b in zip(order, order[1:]):
        if cutoffs[a][1] != cutoffs[b][0]:
            problems.append(f"{a} ends at {iso(cutoffs[a][1])} but {b} starts at {iso(cutoffs[b][0])}")
    for name in order:
        start, end = cutoffs[name]
        rows = frame.filter(pl.col("split") == name)
        inside = pl.col("timestamp") >= start
        if end is not None:
            inside = inside & (pl.col("timestamp") < end)
        outside = rows.filter(~inside)
        if outside.height:
            problems.append(f"{outside.height} {name} rows lie outside [{iso(start)}, {iso(end)}) "
                            f"(first at {iso(outside['timestamp'][0])})")
        if end is not None:
            leaking = rows.filter(pl.col("is_sample") & (pl.col("label_end") >= end))
            if leaking.height:
                problems.append(f"{leaking.height} {name} samples have a label horizon reaching the next split "
                                f"(first at {iso(leaking['timestamp'][0])})")
    return CheckOutcome("splits_purged_disjoint", not problems,
                        {"cutoffs": {k: [iso(a), iso(b)] for k, (a, b) in cutoffs.items()}, "horizon": horizon,
                         "problems": problems},
                        "; ".join(problems) or f"chronological at shared cutoffs, purged by {horizon} candles")


def build_windows(splits_frame: pl.DataFrame, cell: GridCell) -> StepResult:
    """Normalize with the train-only scaler and record each split's window ends (views, not copies)."""
    from patx_core.data.splits import windows_from_frame

    scaler = UniverseScaler.from_dict(read_json(cell.paths.scaler_json))
    data = windows_from_frame(splits_frame, scaler, cell.variant.data.window_size)
    data.save(cell.paths.windows)
    meta = {"matrix_shape": list(data.matrix.shape), "window_size": data.window_size,
            "matrix_mb": round(data.matrix.nbytes / 2**20, 3),
            "sequences": {s: data.n_sequences(s) for s in data.splits},
            "windows_share_memory": bool(np.shares_memory(data.all_windows(), data.matrix))}
    return StepResult(value=data, metadata=meta)
