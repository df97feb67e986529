"""One function per step of the lifecycle: what each Dagster asset calls, and what a notebook can.

Each step takes plain values, a ``VariantConfig`` and a ``VariantPaths``, writes its artifacts
atomically through ``patx_core``, and returns a ``StepResult``: the value (if any), metadata
for the UI, and ``CheckOutcome``s for the properties the orchestration turns into asset checks.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import polars as pl

from patx_core.artifacts import PathLike, atomic_copy, atomic_write_json, read_json, sha256_file
from patx_core.config import VariantConfig
from patx_core.evaluation_json import json_safe, split_summaries
from patx_core.paths import REPO_ROOT, VariantPaths, leaderboard_md
from patx_core.scaler import Scaler
from patx_core.windows import WindowedData

if TYPE_CHECKING:
    from patx_core.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

POSITIVE_RATE_RANGE = (0.05, 0.95)


@dataclass(frozen=True)
class CheckOutcome:
    """One verified property of a step's output."""

    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass
class StepResult:
    value: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    markdown: str = ""


def _iso(ts: Any) -> str | None:
    return None if ts is None else ts.isoformat()


def _date_range(frame: pl.DataFrame) -> dict[str, Any]:
    return {"first_timestamp": _iso(frame["timestamp"].min()), "last_timestamp": _iso(frame["timestamp"].max())}


def _scaler_path(paths: VariantPaths) -> Path:
    return paths.work_dir / "scaler.json"


def _windows_path(paths: VariantPaths) -> Path:
    return paths.work_dir / "windows.npz"


# --------------------------------------------------------------------------------------- data


def load_raw_prices(raw_path: PathLike, variant: VariantConfig) -> StepResult:
    """Read and validate the raw parquet; refuses (``RawDataError``) before anything is written."""
    from patx_core.validation import describe_row_requirement, read_raw_parquet, required_rows

    settings = (variant.data, variant.labels, variant.split)
    raw = read_raw_parquet(raw_path, min_rows=required_rows(*settings),
                           min_rows_for=f"variant {variant.name!r}: {describe_row_requirement(*settings)}")
    # read_raw_parquet validated this very frame (pandera schema + invariants, after normalization)
    # or raised, so the check records that outcome rather than validating it a second time.
    schema_check = CheckOutcome(
        "raw_prices_schema", True, {"columns": {c: str(t) for c, t in raw.schema.items()}, "rows": raw.height},
        "pandera RawPricesSchema and the OHLC/timestamp invariants hold")
    meta = {"dagster/row_count": raw.height, "path": str(raw_path), **_date_range(raw)}
    return StepResult(value=raw, metadata=meta, checks=[schema_check])


def build_features(raw: pl.DataFrame, variant: VariantConfig) -> StepResult:
    """Features, triple-barrier labels and trade outcomes for every raw row."""
    from patx_core.dataset import build_feature_table
    from patx_core.features import feature_columns

    table = build_feature_table(raw, variant.data, variant.labels)
    cols = list(feature_columns(variant.data.feature_set))
    complete = table.filter(pl.all_horizontal(pl.col(cols).is_not_null()))
    first_complete = complete["timestamp"].min()
    after_warmup = table.filter(pl.col("timestamp") >= first_complete) if first_complete is not None else table
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
            "first_complete_timestamp": _iso(first_complete), **_date_range(table)}
    return StepResult(value=table, metadata=meta, checks=checks)


def build_splits(table: pl.DataFrame, variant: VariantConfig, paths: VariantPaths) -> StepResult:
    """Chronological purged splits; the scaler (fitted on train rows only) goes to the work dir."""
    from patx_core.dataset import split_dataset

    ds = split_dataset(table, variant.split, variant.labels, variant.data)
    atomic_write_json(_scaler_path(paths), ds.scaler.to_plain())
    frame = ds.frame
    summary = split_summaries(frame, variant.split.names)
    checks = [purge_check(frame, ds.bounds, variant.labels.horizon),
              CheckOutcome("splits_scaler_std_positive", bool(np.all(ds.scaler.std > 0)),
                           {"min_std": float(ds.scaler.std.min()),
                            "std": dict(zip(ds.scaler.feature_columns, map(float, ds.scaler.std)))},
                           "scaler fitted on train rows only; every std > 0")]
    meta = {"dagster/row_count": frame.height, "splits": summary,
            "scaler_mean": dict(zip(ds.scaler.feature_columns, map(float, ds.scaler.mean)))}
    return StepResult(value=frame, metadata=meta, checks=checks)


def purge_check(frame: pl.DataFrame, bounds: dict[str, tuple[int, int]], horizon: int) -> CheckOutcome:
    """Splits are contiguous, ordered and disjoint, and no sample's label horizon leaves its split."""
    order = [s for s in ("train", "val", "test") if s in bounds]
    problems: list[str] = []
    for a, b in zip(order, order[1:]):
        if bounds[a][1] != bounds[b][0]:
            problems.append(f"{a} ends at row {bounds[a][1]} but {b} starts at {bounds[b][0]}")
    split_col = frame["split"].to_numpy()
    is_sample = frame["is_sample"].to_numpy()
    for name in order[:-1]:
        start, end = bounds[name]
        if not np.all(split_col[start:end] == name):
            problems.append(f"rows {start}..{end} are not all {name}")
        rows = np.flatnonzero(is_sample[start:end]) + start
        leaking = rows[rows + horizon >= end]
        if leaking.size:
            problems.append(f"{leaking.size} {name} samples have a label horizon reaching the next split "
                            f"(first at row {int(leaking[0])})")
    return CheckOutcome("splits_purged_disjoint", not problems,
                        {"bounds": {k: list(v) for k, v in bounds.items()}, "horizon": horizon,
                         "problems": problems},
                        "; ".join(problems) or f"disjoint, ordered, purged by {horizon} rows")


def build_windows(splits_frame: pl.DataFrame, variant: VariantConfig, paths: VariantPaths) -> StepResult:
    """Normalize with the train-only scaler and record each split's window ends (views, not copies)."""
    from patx_core.dataset import windows_from_frame

    scaler = Scaler.from_dict(read_json(_scaler_path(paths)))
    data = windows_from_frame(splits_frame, scaler, variant.data.window_size)
    data.save(_windows_path(paths))
    meta = {"matrix_shape": list(data.matrix.shape), "window_size": data.window_size,
            "matrix_mb": round(data.matrix.nbytes / 2**20, 3),
            "sequences": {s: data.n_sequences(s) for s in data.splits},
            "windows_share_memory": bool(np.shares_memory(data.all_windows(), data.matrix))}
    return StepResult(value=data, metadata=meta)


# ----------------------------------------------------------------------------------- training


def train_model(variant: VariantConfig, paths: VariantPaths, *,
                on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> StepResult:
    """Train with early stopping; publish ``scaler.pkl`` and then ``best_model.pth``.

    The checkpoint carries its own scaler, config and training history, so it alone is the commit
    point of a training run: a kill before its rename leaves the previous model whole and
    self-consistent (``scaler.pkl`` is a convenience copy for the guide's users, never read here).
    """
    from patx_core.checkpoint import save_checkpoint, save_scaler
    from patx_core.train import Trainer

    data = WindowedData.load(_windows_path(paths))
    scaler = Scaler.from_dict(read_json(_scaler_path(paths)))
    trainer = Trainer(variant.model, variant.train, data, on_epoch_end=on_epoch_end)
    history = trainer.train()
    best = history["best_epoch"] - 1
    best_metrics = {k: float(v[best]) for k, v in history.items() if isinstance(v, list) and len(v) > best}
    save_scaler(paths.scaler, scaler)
    save_checkpoint(paths.checkpoint, model=trainer.model, variant=variant, scaler=scaler,
                    metrics={**best_metrics, "best_epoch": history["best_epoch"], "history": json_safe(history)},
                    feature_columns=data.feature_columns)
    meta = {"epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
            "best_val_loss": best_metrics.get("val_loss"), "training_seconds": history["seconds"],
            "device": history["device"], "params": history["params"], "seed": variant.train.seed,
            "stopped_early": history.get("stopped_early"), "checkpoint": str(paths.checkpoint)}
    return StepResult(value=history, metadata=meta)


# --------------------------------------------------------------------------------- evaluation


def code_version() -> str | None:
    """The git commit of this checkout, if it is one (recorded in manifests)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _require_same_training_data(checkpoint: LoadedCheckpoint, variant: VariantConfig, data: WindowedData, scaler: Scaler,
                                paths: VariantPaths) -> None:
    """Refuse to evaluate a model against windows, labels or splits it was not trained on.

    A user who edits a variant and re-materializes only part of the graph would otherwise get a
    report of one model judged on another configuration's data.
    """
    saved = checkpoint.variant.to_dict()
    current = variant.to_dict()
    changed = [k for k in ("data", "labels", "split", "model") if saved[k] != current[k]]
    if changed or checkpoint.window_size != data.window_size or checkpoint.feature_columns != data.feature_columns \
            or not np.array_equal(checkpoint.scaler.mean, scaler.mean):
        what = f"settings {changed} changed" if changed else "the splits/windows changed"
        raise RuntimeError(f"{paths.checkpoint} was trained before {what} for variant {variant.name!r}; "
                           "re-materialize trained_model (or the whole graph) before evaluation_report")


def evaluate_model(features: pl.DataFrame, splits_frame: pl.DataFrame, variant: VariantConfig,
                   paths: VariantPaths, raw_path: PathLike) -> StepResult:
    """Threshold on val, metrics on val/test, backtest on the gate split; write the report.

    ``evaluation.json`` and ``report.md`` are written *before* the gate is judged by the caller,
    so a failed gate still leaves a report that says why.
    """
    from patx_core.checkpoint import load_checkpoint
    from patx_core.evaluation_json import SplitPredictions, evaluate_variant
    from patx_core.report import write_report
    from patx_core.train import predict_proba

    data = WindowedData.load(_windows_path(paths))
    checkpoint = load_checkpoint(paths.checkpoint)
    _require_same_training_data(checkpoint, variant, data, Scaler.from_dict(read_json(_scaler_path(paths))),
                                paths)
    history = checkpoint.metrics["history"]
    predictions = {}
    for split in variant.split.names:
        if split == "train":
            continue
        rows = data.ends[split]
        predictions[split] = SplitPredictions(samples=splits_frame[rows],
                                              prob=predict_proba(checkpoint.model, data, split,
                                                                 batch_size=variant.train.eval_batch_size))
    ev = evaluate_variant(variant, dataset_path=str(raw_path), split_frame=splits_frame,
                          prices=features.select("timestamp", "entry_price"), history=history,
                          predictions=predictions)
    body = {**ev.body, "checkpoint_sha256": sha256_file(paths.checkpoint),
            "generated_at": datetime.now(timezone.utc).isoformat()}
    atomic_write_json(paths.evaluation_json, body)
    markdown = write_report(paths.report_dir, body, history=history, predictions=ev.predictions,
                            equity=ev.backtest.equity)
    gate, f1 = body["checks"]["precision_gate"], body["checks"]["f1"]
    gate_meta = {k: gate.get(k) for k in ("precision", "precision_ci95", "n_signals", "base_rate", "threshold",
                                          "split", "min_signals", "reason")}
    checks = [CheckOutcome("evaluation_report_precision_above_0_7", bool(gate["passed"]), gate_meta, gate["reason"]),
              CheckOutcome("evaluation_report_f1_above_0_5", bool(f1["passed"]), dict(f1),
                           f"F1 {f1.get('f1')} on {gate['split']}")]
    gate_metrics = body["metrics"].get(variant.gate_split, {})
    meta = {"gate_passed": bool(gate["passed"]), "gate_reason": gate["reason"], "threshold": body["threshold"],
            "gate_split": variant.gate_split,
            **{f"{variant.gate_split}_{k}": gate_metrics.get(k)
               for k in ("precision", "recall", "f1", "roc_auc", "n_signals", "base_rate", "lift")},
            "evaluation_json": str(paths.evaluation_json), "report_md": str(paths.report_md)}
    return StepResult(value=body, metadata=meta, checks=checks, markdown=markdown)


# ---------------------------------------------------------------------------------- promotion


def promote_champion(variant: VariantConfig, paths: VariantPaths) -> StepResult:
    """Copy the checkpoint to ``models/<variant>/`` with a manifest — only behind a passed gate.

    The blocking asset check already keeps this step from running after a failed gate; reading
    the gate again here keeps a direct call (notebook, a selection without the check) just as safe.
    """
    evaluation = read_json(paths.evaluation_json)
    gate = evaluation["checks"]["precision_gate"]
    if not gate["passed"]:
        raise RuntimeError(f"variant {variant.name!r}: precision gate failed ({gate['reason']}); "
                           f"the champion in {paths.champion_dir} is left unchanged")
    checkpoint_sha = sha256_file(paths.checkpoint)
    if evaluation.get("checkpoint_sha256") not in (None, checkpoint_sha):
        raise RuntimeError(f"variant {variant.name!r}: {paths.checkpoint} changed since it was evaluated; "
                           "re-run evaluation_report before promoting")
    manifest = {
        "variant": variant.name,
        "promoted_at": datetime.now(timezone.utc).isoformat(),
        "checkpoint_sha256": checkpoint_sha,
        "dataset": evaluation["dataset"],
        "splits": evaluation["splits"],
        "metrics": evaluation["metrics"],
        "threshold": evaluation["threshold"],
        "precision_gate": gate,
        "variant_config": variant.to_dict(),
        "code_version": code_version(),
    }
    atomic_copy(paths.checkpoint, paths.champion_checkpoint)
    atomic_write_json(paths.champion_manifest, manifest)
    meta = {"champion": str(paths.champion_checkpoint), "threshold": manifest["threshold"],
            "gate_precision": gate["precision"], "gate_signals": gate["n_signals"],
            "checkpoint_sha256": checkpoint_sha}
    return StepResult(value=manifest, metadata=meta)


def latest_signal(variant: VariantConfig, paths: VariantPaths, raw_path: PathLike) -> StepResult:
    """Apply the champion to the newest window of the raw data → ``signals/<variant>/latest.json``."""
    from patx_core.predict import predict_from_paths

    if not paths.champion_checkpoint.exists() or not paths.champion_manifest.exists():
        raise RuntimeError(f"variant {variant.name!r} has no champion in {paths.champion_dir}: its precision "
                           "gate has never passed, so there is no model trusted to signal")
    manifest = read_json(paths.champion_manifest)
    if sha256_file(paths.champion_checkpoint) != manifest["checkpoint_sha256"]:
        raise RuntimeError(f"{paths.champion_checkpoint} does not match {paths.champion_manifest} (a promotion "
                           "was interrupted between the two files); re-run champion_model")
    (row,) = predict_from_paths(paths.champion_checkpoint, raw_path, last=1, threshold=manifest["threshold"])
    signal = {**row, "variant": variant.name,
              "model": {k: manifest.get(k) for k in ("promoted_at", "checkpoint_sha256", "threshold",
                                                     "code_version", "dataset", "precision_gate")}}
    atomic_write_json(paths.signal_json, signal)
    meta = {"timestamp": row["timestamp"], "probability": row["probability"], "signal": row["signal"],
            "threshold": row["threshold"], "path": str(paths.signal_json)}
    return StepResult(value=signal, metadata=meta)


# -------------------------------------------------------------------------------- leaderboard


def build_leaderboard(root: PathLike, variants: list[str]) -> StepResult:
    """Every variant whose ``evaluation.json`` exists, as ``reports/leaderboard.md`` and rows."""
    from patx_core.report import write_leaderboard

    evaluations = {}
    for name in variants:
        path = VariantPaths.for_variant(name, root).evaluation_json
        if path.exists():
            evaluations[name] = read_json(path)
    markdown, rows = write_leaderboard(evaluations, leaderboard_md(root))
    columns = list(rows[0]) if rows else ["variant"]
    return StepResult(value={"rows": rows, "columns": columns}, markdown=markdown,
                      metadata={"variants": list(evaluations), "path": str(leaderboard_md(root))})
