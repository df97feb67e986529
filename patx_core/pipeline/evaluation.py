"""The evaluation step: the gate and the selection gate on the cell's checkpoint, report and looks."""

from __future__ import annotations

import logging
import subprocess
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import polars as pl

from patx_core.storage.artifacts import atomic_write_json, read_json, sha256_file
from patx_core.settings.config import VariantConfig
from patx_core.evaluation.looks import counted_looks, evaluation_looks, record_looks
from patx_core.evaluation.selection import selection_block
from patx_core.settings.grid import GridCell
from patx_core.storage.paths import REPO_ROOT, VariantPaths
from patx_core.data.scaler import UniverseScaler
from patx_core.data.universe import SYMBOL
from patx_core.data.windows import WindowedData
from patx_core.model import threads

if TYPE_CHECKING:
    from patx_core.model.checkpoint import LoadedCheckpoint

from patx_core.pipeline.step import CheckOutcome, StepResult
from patx_core.pipeline.training import read_seed_predictions

log = logging.getLogger(__name__)


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

    threads.use_threads()  # the cores free now: a step beside another job must not thrash
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
    checkpoint_sha = sha256_file(paths.checkpoint)
    body = {**ev.body, "seeds": _seed_block(cell, predictions, checkpoint_sha, history),
            "checkpoint_sha256": checkpoint_sha, "generated_at": judged_at.isoformat()}
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
            "selection_confidence": selection["confidence"],  # StepResult rounds it for the UI
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
