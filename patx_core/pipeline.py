"""One function per step of the lifecycle: what each Dagster asset calls, and what a notebook can.

Each step takes plain values and a :class:`~patx_core.settings.grid.GridCell` (the dataset, the variant
with the dataset's market settings, and their paths), writes its artifacts
atomically through ``patx_core``, and returns a ``StepResult``: the value (if any), metadata
for the UI, and ``CheckOutcome``s for the properties the orchestration turns into asset checks.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import polars as pl

from patx_core.storage.artifacts import PathLike, atomic_copy, atomic_write_json, read_json, sha256_file
from patx_core.storage.jsonsafe import iso, json_safe, rounded
from patx_core.settings.config import VariantConfig
from patx_core.evaluation.looks import counted_looks, evaluation_looks, fold_looks, record_looks
from patx_core.evaluation.record import split_summaries
from patx_core.evaluation.selection import selection_block
from patx_core.settings.grid import GridCell
from patx_core.storage.paths import REPO_ROOT, VariantPaths, leaderboard_md
from patx_core.data.scaler import UniverseScaler
from patx_core.data.universe import SYMBOL
from patx_core.data.windows import WindowedData
from patx_core.model.threads import use_threads
from patx_core.serving.champion import (apply_suspension, as_recorded, champion_manifest, review_champion,
                                       suspension_reason)

if TYPE_CHECKING:
    from patx_core.model.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

POSITIVE_RATE_RANGE = (0.05, 0.95)


@dataclass(frozen=True)
class CheckOutcome:
    """One verified property of a step's output."""

    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        # a person reads it in the UI (0.9191, not 0.9190751445086706)
        object.__setattr__(self, "metadata", rounded(self.metadata))


@dataclass
class StepResult:
    """What a step returns: ``value`` for the next step; ``metadata`` (floats rounded for the UI, the
    artifacts keep every digit), ``checks`` and ``markdown`` for the asset."""

    value: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    markdown: str = ""

    def __post_init__(self) -> None:
        self.metadata = rounded(self.metadata)


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


# ----------------------------------------------------------------------------------- training


def train_model(cell: GridCell, *, on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
                on_progress: Callable[[int, int, int, int], None] | None = None) -> StepResult:
    """Train with early stopping; publish ``scaler.pkl`` and then ``best_model.pth``.

    The checkpoint carries its own scaler, config and training history, so it alone is the commit
    point of a training run: a kill before its rename leaves the previous model whole and
    self-consistent (``scaler.pkl`` is a convenience copy for the guide's users, never read here).
    """
    from patx_core.model.checkpoint import save_checkpoint, save_scaler
    from patx_core.model.trainer import Trainer

    use_threads()  # the cores free now: a step beside another job must not thrash
    variant, paths = cell.variant, cell.paths
    data = WindowedData.load(paths.windows)
    scaler = UniverseScaler.from_dict(read_json(paths.scaler_json))
    seeds = variant.train.seed_list
    if len(seeds) == 1:
        trainer = Trainer(variant.model, variant.train, data, on_epoch_end=on_epoch_end,
                          on_progress=on_progress)
        history = trainer.train()
        model, others = trainer.model, []
    else:  # a seed study: every seed's model in one fused step; the first seed's is the candidate
        model, history, others = _train_seeds(variant, data, on_epoch_end)
    best = history["best_epoch"] - 1
    best_metrics = {k: float(v[best]) for k, v in history.items() if isinstance(v, list) and len(v) > best}
    candidate, extra = model, {}
    if variant.train.ensemble:  # the candidate is every seed's model, averaged; the curves stay the first seed's
        from patx_core.model.ensemble import SeedEnsemble

        candidate = SeedEnsemble.from_members(variant.model, [model, *(m for _, m, _ in others)])
        extra = {"ensemble_seeds": list(seeds), "member_best_epochs": [h["best_epoch"] for h in
                                                                       [history, *(h for _, _, h in others)]]}
    save_scaler(paths.scaler, scaler)
    save_checkpoint(paths.checkpoint, model=candidate, variant=variant, scaler=scaler,
                    metrics={**best_metrics, "best_epoch": history["best_epoch"], **extra,
                             "history": json_safe(history)},
                    feature_columns=data.feature_columns,
                    interval_seconds=cell.input_info()["median_spacing_seconds"])
    _write_seed_predictions(paths, data, variant, [(seeds[0], model, history), *others])
    meta = {"epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
            "best_val_loss": best_metrics.get("val_loss"), "training_seconds": history["seconds"],
            "device": history["device"], "params": history["params"], "seed": variant.train.seed,
            "stopped_early": history.get("stopped_early"), "checkpoint": str(paths.checkpoint)}
    if len(seeds) > 1:
        meta["seeds"] = list(seeds)
        meta["candidate"] = f"{len(seeds)}-seed ensemble" if variant.train.ensemble else f"seed {seeds[0]}"
        meta["seed_best_val_loss"] = {str(s): h["best_val_loss"] for s, _, h in [(seeds[0], model, history), *others]}
    return StepResult(value=history, metadata=meta)


def _train_seeds(variant: VariantConfig, data: WindowedData,
                 on_epoch_end: Callable[[int, dict[str, float]], None] | None) -> tuple[Any, dict[str, Any], list]:
    """Train the cell's model under every seed of ``train.seeds``, fused; progress of the first seed."""
    from patx_core.model.ensemble import train_seeds
    from patx_core.model.progress import Heartbeat, ModelsProgress

    seeds = variant.train.seed_list
    progress = ModelsProgress(f"seed study {variant.name}", [f"seed {s}" for s in seeds], variant.train.max_epochs)

    def forward(k: int, epoch: int, metrics: dict[str, float]) -> None:
        progress.on_epoch_end(k, epoch, metrics)
        if k == 0 and on_epoch_end is not None:
            on_epoch_end(epoch, metrics)

    with Heartbeat(progress.line):
        [trained] = train_seeds(variant.model, variant.train, [data], on_epoch_end=forward)
    (model, history), rest = trained[0], trained[1:]
    return model, history, [(s, m, h) for s, (m, h) in zip(seeds[1:], rest)]


def _write_seed_predictions(paths: VariantPaths, data: WindowedData, variant: VariantConfig,
                            runs: list[tuple[int, Any, dict[str, Any]]]) -> None:
    """Record each seed's probabilities on the evaluation splits with the checkpoint they belong to,
    so an evaluation never mixes a seed study with another training run."""
    import io

    from patx_core.model.inference import predict_proba
    from patx_core.storage.artifacts import atomic_write_with

    arrays: dict[str, np.ndarray] = {"seeds": np.asarray([s for s, _, _ in runs], dtype=np.int64),
                                     "checkpoint_sha256": np.asarray(sha256_file(paths.checkpoint)),
                                     "best_epoch": np.asarray([h["best_epoch"] for _, _, h in runs], dtype=np.int64)}
    for split in variant.split.names:
        if split != "train":
            for seed, model, _ in runs:
                arrays[f"{split}_{seed}"] = predict_proba(model, data, split, batch_size=variant.train.eval_batch_size)

    def write(buf: io.BytesIO) -> None:
        np.savez(buf, **arrays)

    atomic_write_with(paths.seed_predictions, write)


def read_seed_predictions(cell: GridCell) -> dict[str, Any]:
    """The seed study ``trained_model`` recorded: seeds, best epochs and per-split probabilities."""
    import io

    path = cell.paths.seed_predictions
    if not path.exists():
        raise RuntimeError(f"{path} is missing: re-materialize trained_model for {cell.key}")
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------------- evaluation


def code_version() -> str | None:
    """The git commit of this checkout, if it is one (recorded in manifests)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _require_same_training_data(checkpoint: LoadedCheckpoint, variant: VariantConfig, data: WindowedData,
                                scaler: UniverseScaler, paths: VariantPaths) -> None:
    """Refuse to evaluate a model against windows, labels or splits it was not trained on.

    A user who edits a variant and re-materializes only part of the graph would otherwise get a
    report of one model judged on another configuration's data.
    """
    saved = checkpoint.variant.to_dict()
    current = variant.to_dict()
    changed = [k for k in ("data", "labels", "split", "model") if saved[k] != current[k]]
    if changed or checkpoint.window_size != data.window_size or checkpoint.feature_columns != data.feature_columns \
            or checkpoint.scaler.to_plain() != scaler.to_plain():
        what = f"settings {changed} changed" if changed else "the splits/windows changed"
        raise RuntimeError(f"{paths.checkpoint} was trained before {what} for variant {variant.name!r}; "
                           "re-materialize trained_model (or the whole graph) before evaluation_report")


def evaluate_model(features: pl.DataFrame, splits_frame: pl.DataFrame, cell: GridCell) -> StepResult:
    """Threshold on val, metrics on val/test, backtest on the gate split; write the report.

    ``evaluation.json`` and ``report.md`` are written whatever the gate's verdict, so a refused
    model still leaves a report that says why.
    """
    from patx_core.model.checkpoint import load_checkpoint
    from patx_core.evaluation.record import SplitPredictions, evaluate_variant
    from patx_core.evaluation.report import write_report
    from patx_core.model.inference import predict_proba

    use_threads()  # the cores free now: a step beside another job must not thrash
    variant, paths = cell.variant, cell.paths
    data = WindowedData.load(paths.windows)
    checkpoint = load_checkpoint(paths.checkpoint)
    _require_same_training_data(checkpoint, variant, data, UniverseScaler.from_dict(read_json(paths.scaler_json)),
                                paths)
    info = cell.input_info()
    history = checkpoint.metrics["history"]
    predictions = {}
    for split in variant.split.names:
        if split == "train":
            continue
        rows = data.ends[split]
        predictions[split] = SplitPredictions(samples=splits_frame[rows],
                                              prob=predict_proba(checkpoint.model, data, split,
                                                                 batch_size=variant.train.eval_batch_size))
    prices_cols = [c for c in (SYMBOL, "timestamp", "entry_price") if c in features.columns]
    ev = evaluate_variant(variant, dataset_path=", ".join(info["source"]), split_frame=splits_frame,
                          prices=features.select(prices_cols), history=history, predictions=predictions,
                          dataset_info={k: info[k] for k in ("name", "symbols", "interval", "source_sha256",
                                                             "median_spacing_seconds", "skipped_symbols")})
    judged_at = datetime.now(timezone.utc)
    body = {**ev.body, "seeds": _seed_block(cell, predictions, sha256_file(paths.checkpoint), history),
            "checkpoint_sha256": sha256_file(paths.checkpoint), "generated_at": judged_at.isoformat()}
    # The look is recorded before the report: a run killed in between leaves a look counted
    # without a report (the safe side), never a verdict that did not pay for itself.
    window = splits_frame.filter(pl.col("split") == variant.gate_split)["timestamp"]
    ledger = record_looks(paths.dataset.looks, paths.dataset.looks_lock,
                          evaluation_looks(body, window, judged_at=judged_at))
    body["checks"]["precision_gate_selection"] = selection_block(body, counted_looks(ledger, window), variant.eval)
    atomic_write_json(paths.evaluation_json, body)
    markdown = write_report(paths.report_dir, body, history=history, predictions=ev.predictions,
                            equity=ev.backtest.equity)
    gate, f1 = body["checks"]["precision_gate"], body["checks"]["f1"]
    gate_meta = {"target_precision": variant.eval.target_precision,
                 **{k: gate.get(k) for k in ("precision", "precision_ci95", "n_signals", "base_rate", "threshold",
                                             "split", "min_signals", "reason")}}
    selection = body["checks"]["precision_gate_selection"]
    checks = [CheckOutcome("evaluation_report_precision_gate", bool(gate["passed"]), gate_meta, gate["reason"]),
              CheckOutcome("evaluation_report_selection_gate", bool(selection["passed"]), dict(selection),
                           selection["reason"]),
              CheckOutcome("evaluation_report_f1_above_0_5", bool(f1["passed"]), dict(f1),
                           f"F1 {f1.get('f1')} on {gate['split']}")]
    gate_metrics = body["metrics"].get(variant.gate_split, {})
    meta = {"gate_passed": bool(gate["passed"]), "gate_reason": gate["reason"],
            "selection_passed": bool(selection["passed"]), "n_looks": selection["n_looks"],
            "selection_confidence": round(selection["confidence"], 4),
            "threshold": body["threshold"]["value"], "threshold_rule": body["threshold"]["rule"],
            "diagnosis": [d["code"] for d in body["diagnosis"]],
            "diagnosis_text": [f"{d['code']}: {d['explanation']}" for d in body["diagnosis"]],
            "gate_split": variant.gate_split, "dataset": cell.dataset.name, "input_sha256": info["source_sha256"],
            **{f"{variant.gate_split}_{k}": gate_metrics.get(k)
               for k in ("precision", "recall", "f1", "roc_auc", "n_signals", "base_rate", "lift")},
            "evaluation_json": str(paths.evaluation_json), "report_md": str(paths.report_md)}
    return StepResult(value=body, metadata=meta, checks=checks, markdown=markdown)


def _seed_block(cell: GridCell, predictions: dict[str, Any], checkpoint_sha: str,
                history: dict[str, Any]) -> dict[str, Any]:
    """evaluation.json's ``seeds``: every seed's gate figures through the evaluation's own gate."""
    from patx_core.evaluation.record import SplitPredictions, seed_study

    variant = cell.variant
    seeds = variant.train.seed_list
    if len(seeds) == 1:
        return seed_study(variant, {seeds[0]: predictions}, best_epochs={seeds[0]: history["best_epoch"]})
    recorded = read_seed_predictions(cell)
    if str(recorded["checkpoint_sha256"]) != checkpoint_sha or list(recorded["seeds"]) != list(seeds):
        raise RuntimeError(f"{cell.paths.seed_predictions} belongs to another training run than {cell.paths.checkpoint} "
                           f"(seeds {list(recorded['seeds'])} vs {list(seeds)}); re-materialize trained_model")
    per_seed = {s: {split: SplitPredictions(samples=p.samples, prob=recorded[f"{split}_{s}"])
                    for split, p in predictions.items()} for s in seeds}
    return seed_study(variant, per_seed, best_epochs=dict(zip(seeds, recorded["best_epoch"].tolist())))


# ---------------------------------------------------------------------------------- promotion


def promote_champion(cell: GridCell) -> StepResult:
    """Copy the checkpoint to ``models/<variant>/`` with a manifest — only behind this evaluation's
    passed gate, only if that evaluation judged this very checkpoint (by sha256), and never over
    a suspended champion: the current one is first reviewed on tonight's outcomes
    (:func:`review_champion`), so the monitor's decision comes before any replacement.

    A refusal is an ordinary outcome, not an error: the step succeeds with ``promoted: false``
    and the reason, and an earlier champion stays byte-identical.
    """
    variant, paths = cell.variant, cell.paths
    evaluation = read_json(paths.evaluation_json)
    gate = evaluation["checks"]["precision_gate"]
    selection = evaluation["checks"].get("precision_gate_selection")
    checkpoint_sha = sha256_file(paths.checkpoint)
    refusal = None
    previous = champion_manifest(paths)
    if previous is not None and not previous.get("suspended"):
        # Tonight's outcomes judge the current champion before anything replaces it: one that
        # stopped working is suspended and named here, not overwritten by a retrain unnoticed.
        previous = review_champion(cell).manifest or previous
    if previous is not None and previous.get("suspended"):
        sus = previous["suspended"]
        refusal = (f"champion suspended at {sus['at']} ({sus['reason']}); no model is promoted in {cell.key} until "
                   f"a person reinstates it: patx ledger reinstate {cell.dataset.name} {variant.name} --reason TEXT")
    elif not gate["passed"]:
        refusal = f"precision gate failed: {gate['reason']}"
    elif selection is None:
        refusal = (f"{paths.evaluation_json} has no selection gate (it was written before looks were counted); "
                   "re-materialize evaluation_report")
    elif not selection["passed"]:
        refusal = f"selection gate failed: {selection['reason']}"
    elif evaluation.get("checkpoint_sha256") != checkpoint_sha:
        refusal = (f"{paths.checkpoint} changed since it was evaluated (sha256 "
                   f"{str(evaluation.get('checkpoint_sha256'))[:12]} evaluated, {checkpoint_sha[:12]} now)")
    if refusal is not None:
        kept = paths.champion_checkpoint.exists()
        reason = f"{refusal}; {'the earlier champion stays' if kept else 'there is no champion yet'}"
        log.info("%s: not promoted: %s", cell.key, reason)
        return StepResult(value=None, metadata={"promoted": False, "reason": reason,
                                                "champion": str(paths.champion_checkpoint) if kept else None})
    manifest = {
        "dataset": cell.dataset.name,
        "variant": variant.name,
        "promoted_at": datetime.now(timezone.utc).isoformat(),
        "checkpoint_sha256": checkpoint_sha,
        "data": evaluation["dataset"],
        "splits": evaluation["splits"],
        "metrics": evaluation["metrics"],
        "threshold": evaluation["threshold"],
        "precision_gate": gate,
        "precision_gate_selection": selection,
        "variant_config": variant.to_dict(),
        "code_version": code_version(),
    }
    if previous is not None and previous.get("checkpoint_sha256") == checkpoint_sha and previous.get("reinstated"):
        # the same model promoted again keeps its history: the monitor restarts where it was reinstated
        manifest["reinstated"] = previous["reinstated"]
    atomic_copy(paths.checkpoint, paths.champion_checkpoint)
    atomic_write_json(paths.champion_manifest, manifest)
    meta = {"promoted": True, "reason": f"{gate['reason']}; {selection['reason']}",
            "champion": str(paths.champion_checkpoint),
            "threshold": manifest["threshold"]["value"], "gate_precision": gate["precision"],
            "gate_signals": gate["n_signals"], "checkpoint_sha256": checkpoint_sha}
    return StepResult(value=manifest, metadata=meta)


def latest_signal(cell: GridCell) -> StepResult:
    """Score the newest candle of every symbol with the current champion → ``signals/<variant>/latest.json``.

    Runs in every retrain: with no champion (its gate never passed) each symbol's line is
    ``"signal": "hold"`` with ``"reason": "no champion"``, so yesterday's signal never stands.
    """
    from patx_core.serving.predict import predict_universe, recorded_threshold
    from patx_core.data.universe import read_universe

    paths = cell.paths
    universe = read_universe(cell.input_files(), volume=cell.dataset.volume).frame
    newest = universe.group_by(SYMBOL, maintain_order=True).agg(pl.col("timestamp").max())
    model: dict[str, Any] | None = None
    if not paths.champion_checkpoint.exists() or not paths.champion_manifest.exists():
        lines = [{"symbol": s, "timestamp": iso(t), "probability": None, "threshold": None, "signal": "hold",
                  "reason": "no champion"} for s, t in newest.iter_rows()]
    else:
        manifest = read_json(paths.champion_manifest)
        if sha256_file(paths.champion_checkpoint) != manifest["checkpoint_sha256"]:
            raise RuntimeError(f"{paths.champion_checkpoint} does not match {paths.champion_manifest} (a promotion "
                               "was interrupted between the two files); re-run champion_model")
        from patx_core.model.checkpoint import load_checkpoint

        # Resolution and the monitor's decision come before tonight's signal: the night the
        # champion is suspended, it issues no buy.
        state = review_champion(cell)
        manifest = state.manifest or manifest
        threshold, reason = recorded_threshold(manifest, str(paths.champion_manifest))
        lines = predict_universe(load_checkpoint(paths.champion_checkpoint), universe, last=1,
                                 threshold=threshold, hold_reason=reason)
        if manifest.get("suspended"):
            # Tonight the champion is suspended: every symbol's newest candle holds, whatever its
            # date (a symbol that stopped trading before the alarm included), so no "from" here.
            tonight = {**manifest["suspended"], "from": None}
            lines = [dict(line, **dict(zip(("signal", "reason"), apply_suspension(
                line["signal"], line["reason"], datetime.fromisoformat(line["timestamp"]), tonight))))
                for line in lines]
        lines = as_recorded(lines, state.ledger.rows, manifest["checkpoint_sha256"])
        model = {k: manifest.get(k) for k in ("promoted_at", "checkpoint_sha256", "threshold", "code_version",
                                              "precision_gate", "suspended")}
    reason = None if model else "no champion"
    if model and model.get("suspended"):
        reason = suspension_reason(model["suspended"])
    signal = {"dataset": cell.dataset.name, "variant": cell.variant.name,
              "generated_at": datetime.now(timezone.utc).isoformat(), "model": model,
              "reason": reason, "signals": lines}
    atomic_write_json(paths.signal_json, signal)
    meta = {"champion": model is not None, "reason": signal["reason"], "path": str(paths.signal_json),
            "signals": {line["symbol"]: line["signal"] for line in lines},
            "newest_candle": {line["symbol"]: line["timestamp"] for line in lines}}
    return StepResult(value=signal, metadata=meta)


# ------------------------------------------------------------------------ ledger and monitor


def signal_ledger(cell: GridCell) -> StepResult:
    """``<dataset>/ledger/<variant>/signals.parquet``, as :func:`review_champion` computes it.

    Open rows are resolved from the store, every candle newer than each (symbol, model, role)'s
    last row is scored (at most ``monitor.max_backfill``), and the monitor decides on the
    champion. Nothing new: nothing is written, the file stays byte-identical. The whole
    read-resolve-score-publish holds the cell's ledger lock: two runs of one cell (a score run
    and the nightly retrain, two sensor ticks) take turns instead of the last one's file winning.
    """
    from patx_core.serving.ledger import LOCK_TIMEOUT_S, LedgerIntegrityError
    from patx_core.storage.locks import exclusive

    lock = cell.paths.ledger_lock
    with exclusive(lock, timeout_s=LOCK_TIMEOUT_S, what=f"{cell.key} ledger",
                   busy=lambda t: LedgerIntegrityError(
                       f"{cell.key}: another run has held {lock} for over {t:g} s (a score or retrain of the same "
                       "cell writing its ledger); nothing was written: run again when it has finished")):
        return _signal_ledger_locked(cell)


def _signal_ledger_locked(cell: GridCell) -> StepResult:
    from patx_core.serving.ledger import dependent_candles, read_ledger, read_seen_candles, write_ledger

    paths = cell.paths
    state = review_champion(cell, score=True)
    ledger = state.ledger
    stored = read_ledger(paths.ledger)
    added = {role: int((ledger.rows["role"] == role).sum()) - int((stored.rows["role"] == role).sum())
             for role in ("champion", "shadow")}
    seen = dependent_candles(state.universe, ledger.rows)
    old_seen = read_seen_candles(paths.ledger, stored)
    changed = bool(sum(added.values()) or state.resolved or ledger.revisions != stored.revisions
                   or ledger.unprobed != stored.unprobed or not paths.ledger.exists()
                   or old_seen is None or not old_seen.equals(seen))
    changed = changed and not ledger.rows.is_empty()
    if changed:
        # rows and the candles they were resolved from, committed by one rename
        ledger = write_ledger(paths.ledger, ledger, seen)
    rows = ledger.rows
    meta = {"path": str(paths.ledger), "rows": rows.height, "added": added, "resolved": state.resolved,
            "open": int((rows["status"] == "open").sum()), "revisions": len(state.revisions), "written": changed,
            "champion": state.manifest is not None,
            "suspended": bool(state.manifest and state.manifest.get("suspended"))}
    return StepResult(value=rows, metadata=meta)


def track_record(cell: GridCell) -> StepResult:
    """``track_record.json`` + ``.md`` + plots from the ledger; the check ``track_record_live_precision``."""
    from patx_core.evaluation.figures import write_figures
    from patx_core.serving import track_record as tr
    from patx_core.serving.ledger import CHAMPION, counted_rows
    from patx_core.serving.monitor import SUSPENDED
    from patx_core.storage.artifacts import atomic_write_text

    paths, variant = cell.paths, cell.variant
    state = review_champion(cell, score=False)
    rows = state.ledger.rows
    record = tr.build_track_record(rows, state.outcomes, cost_bps=variant.backtest.cost_bps,
                                   confidence=variant.eval.confidence, manifest=state.manifest,
                                   monitor=state.monitor, revisions=state.ledger.revisions, cell_key=cell.key,
                                   generated_at=datetime.now(timezone.utc).isoformat())
    champ_rows = counted_rows(rows, CHAMPION)
    if state.manifest is not None:
        champ_rows = champ_rows.filter(pl.col("model_sha256") == state.manifest["checkpoint_sha256"])
    role_rows = champ_rows if state.manifest is not None else counted_rows(rows, "shadow")
    figures = [
        ("live_precision.png", "Cumulative live precision",
         tr.plot_precision(role_rows, target=variant.eval.target_precision,
                           backtest_ci=record["roles"][CHAMPION].get("backtest_ci"), confidence=variant.eval.confidence,
                           events=tr.monitor_events(state.manifest))),
        ("live_equity.png", "Live equity against buy-and-hold",
         tr.plot_equity(role_rows, state.outcomes, variant.backtest.cost_bps)),
        ("monitor.png", "Monitor statistic", tr.plot_monitor(state.monitor)),
    ]
    on_disk, inline = write_figures(paths.ledger_dir, figures)
    atomic_write_json(paths.track_record_json, json_safe(record))
    atomic_write_text(paths.track_record_md, tr.render_markdown(record, on_disk))
    champ = record["roles"][CHAMPION]
    suspended = bool(state.manifest and state.manifest.get("suspended")) or (
        state.monitor is not None and state.monitor.decision == SUSPENDED)
    mon = record["monitor"] or {}
    lo, hi = champ["precision_ci"]
    check_meta = {"statistic": mon.get("statistic"), "threshold": mon.get("threshold"),
                  "live_precision": champ["precision"], "live_precision_ci": [lo, hi], "n": champ["n_bets_resolved"],
                  "decision": mon.get("decision", "no champion")}
    live = "n/a" if champ["precision"] is None else f"{champ['precision']:.3f}"
    desc = ("no champion: nothing to monitor" if state.manifest is None else
            f"monitor {check_meta['decision']}: CUSUM {mon.get('statistic', 0):.1f} / {mon.get('threshold', 0):.1f}; "
            f"live precision {live} [{lo:.3f}, {hi:.3f}] on {champ['n_bets_resolved']} bets")
    check = CheckOutcome("track_record_live_precision", not suspended, check_meta, desc)
    meta = {"path": str(paths.track_record_json), "champion": state.manifest is not None,
            "monitor": check_meta["decision"],
            **{f"{role}_{k}": record["roles"][role][k] for role in record["roles"]
               for k in ("n_scored", "n_signals", "n_bets", "n_bets_resolved", "precision")}}
    return StepResult(value=record, metadata=meta, checks=[check], markdown=tr.render_markdown(record, inline))


# -------------------------------------------------------------------------------- leaderboard


def build_leaderboard(root: PathLike, cells: list[GridCell]) -> StepResult:
    """Every ``evaluation.json`` under ``root``, as ``<root>/leaderboard.md`` and rows.

    The cells of the current grid come first, in grid order; evaluations of cells the grid no
    longer has (another ``PATX_DATASETS`` or ``PATX_VARIANTS``) stay, marked as outside it: a
    result on disk never vanishes from the leaderboard.
    """
    from patx_core.evaluation.report import write_leaderboard
    from patx_core.settings.grid import cell_key, parse_key
    from patx_core.storage.paths import DatasetPaths, evaluations_on_disk

    on_disk = {cell_key(d, v): path for (d, v), path in evaluations_on_disk(root).items()}
    in_grid = [cell.key for cell in cells if cell.key in on_disk]
    outside = [key for key in on_disk if key not in set(in_grid)]
    evaluations, live = {}, {}
    for key in [*in_grid, *outside]:
        evaluations[key] = read_json(on_disk[key])
        dataset, variant = parse_key(key)
        track = DatasetPaths.for_dataset(dataset, root).variant(variant).track_record_json
        if track.exists():
            live[key] = read_json(track)
    markdown, rows = write_leaderboard(evaluations, leaderboard_md(root), live, outside_grid=outside)
    columns = list(rows[0]) if rows else ["dataset", "variant"]
    return StepResult(value={"rows": rows, "columns": columns}, markdown=markdown,
                      metadata={"cells": list(evaluations), "outside_grid": outside,
                                "path": str(leaderboard_md(root))})


# ------------------------------------------------------------------------------ walk-forward


def walk_forward(features: pl.DataFrame, cell: GridCell) -> StepResult:
    """Retrain at past cutoffs and trade each following stretch; walk_forward.json + .md in the report dir.

    The whole walk-forward in this process, as one fold group; the Dagster asset runs the same
    three parts as separate steps (:func:`walk_forward_plan`, :func:`walk_forward_fold_group`,
    :func:`walk_forward_report`). The check ``walk_forward_gate_stable`` passes when the gate
    passed in at least ``walk_forward.min_pass_rate`` of the folds.
    """
    import time

    started = time.perf_counter()
    [group] = walk_forward_plan(features, cell, groups=1)
    results = walk_forward_fold_group(features, cell, group)
    return walk_forward_report(results, cell, concurrency="sequential", workers=1,
                               seconds=time.perf_counter() - started)


def walk_forward_plan(features: pl.DataFrame, cell: GridCell, *,
                      groups: int | Callable[[int], int]) -> list[list[Any]]:
    """The cell's folds (:func:`~patx_core.evaluation.walk_forward.plan_folds`) cut into at most
    ``groups`` contiguous fold groups (a number, or a function of the number of folds), each to be
    trained as one unit."""
    from patx_core.evaluation.walk_forward import fold_groups, plan_folds

    plans = plan_folds(features, cell.variant)
    return fold_groups(plans, groups(len(plans)) if callable(groups) else groups)


def walk_forward_fold_group(features: pl.DataFrame, cell: GridCell, plans: list[Any], *,
                            on_fold_end: Callable[[dict[str, Any]], None] | None = None) -> list[Any]:
    """Train, threshold, trade and judge one fold group on the variant's training device."""
    from patx_core.evaluation.walk_forward import run_fold_group
    from patx_core.model.trainer import resolve_device

    use_threads()  # the cores free now: fold steps side by side must not thrash each other
    device = str(resolve_device(cell.variant.train.device))
    return run_fold_group(features, plans, cell.variant, device=device, on_fold_end=on_fold_end)


def walk_forward_report(results: list[Any], cell: GridCell, *, concurrency: str, workers: int,
                        seconds: float) -> StepResult:
    """Every fold group's results stitched (:func:`~patx_core.evaluation.walk_forward.stitch_folds`)
    into walk_forward.json + .md, its metadata and the ``walk_forward_gate_stable`` check."""
    from patx_core.evaluation.walk_forward import stitch_folds, write_walk_forward

    variant = cell.variant
    result = stitch_folds(results, variant, concurrency=concurrency, workers=workers, seconds=seconds)
    record_looks(cell.paths.dataset.looks, cell.paths.dataset.looks_lock,
                 fold_looks(results, dataset=cell.dataset.name, variant=variant.name,
                            judged_at=datetime.now(timezone.utc)))
    markdown = write_walk_forward(cell.paths.report_dir, result, variant, title=cell.key)
    s = json_safe(result.summary)
    keys = ("n_folds", "gate_pass_rate", "precision", "precision_ci95", "n_signals", "base_rate",
            "strategy_return", "buy_and_hold_return", "random_entry_percentile", "concurrency", "workers", "seconds")
    meta = {k: s[k] for k in keys} | {"path": str(cell.paths.report_dir / "walk_forward.json"),
                                       "folds_passed": [f["gate_passed"] for f in result.folds]}
    check = CheckOutcome(
        "walk_forward_gate_stable", bool(s["stable"]),
        {"gate_pass_rate": s["gate_pass_rate"], "min_pass_rate": s["min_pass_rate"],
         "gate_passed_folds": s["gate_passed_folds"], "n_folds": s["n_folds"]},
        f"gate passed in {s['gate_passed_folds']} of {s['n_folds']} folds "
        f"({s['gate_pass_rate']:.2f} vs min_pass_rate {s['min_pass_rate']:.2f})")
    return StepResult(value=result.to_json(), metadata=meta, checks=[check], markdown=markdown)
