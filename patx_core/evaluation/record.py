"""The whole ``evaluation.json`` of one variant: threshold, metrics, backtest, gate, diagnosis.

``evaluate_variant`` does the work (the gate of :func:`patx_core.evaluation.gate.judge`, metrics
on val/test, backtest on the gate split, the named failure modes) and ``build_evaluation`` assembles the body from those
parts. A model that abstains (no val threshold met the precision rule) has ``threshold.value``
null, no signals on any split, a backtest without trades and a failed gate whose reason starts
with "abstains"; its max-F1 point appears only under ``threshold.diagnostic``.

Both functions are pure: no files, no clock, so the same inputs always give the same JSON. The
orchestration writes the body with ``patx_core.storage.artifacts.atomic_write_json``, hands ``Evaluation``
to ``patx_core.evaluation.report.write_report`` and can show ``Evaluation.diagnosis`` as UI metadata.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import polars as pl

from patx_core.evaluation.backtest import SAMPLE_COLUMNS, BacktestResult, annualization_note, backtest, portfolio
from patx_core.settings.config import VariantConfig
from patx_core.evaluation.diagnosis import Diagnosis, diagnose
from patx_core.evaluation.gate import GateVerdict, judge
from patx_core.evaluation.metrics import classification_metrics, wilson_interval
from patx_core.evaluation.threshold import ThresholdChoice
from patx_core.storage.jsonsafe import iso, json_safe

log = logging.getLogger(__name__)

#: History keys (``Trainer.train()``) copied into the ``training`` block.
HISTORY_KEYS = ("epochs_run", "best_epoch", "seconds", "device", "params")
#: F1 warning check level.
MIN_F1 = 0.5


@dataclass(frozen=True)
class SplitPredictions:
    """One split's sample rows and the model's buy probabilities, aligned row for row.

    ``samples`` is ``SplitDataset.frame`` at ``sample_rows(split)`` (time order) and needs
    ``label`` plus the backtest's ``SAMPLE_COLUMNS``; ``prob`` is ``predict_proba`` for that
    split, whose windows end at those same rows.
    """

    samples: pl.DataFrame
    prob: np.ndarray

    def __post_init__(self) -> None:
        missing = [c for c in ("label", *SAMPLE_COLUMNS) if c not in self.samples.columns]
        if missing:
            raise ValueError(f"SplitPredictions.samples lacks column(s) {missing}")
        if np.asarray(self.prob).shape != (self.samples.height,):
            raise ValueError(f"SplitPredictions: prob has shape {np.asarray(self.prob).shape} "
                             f"for {self.samples.height} sample rows")
        if self.samples["label"].null_count():
            raise ValueError("SplitPredictions.samples: label is null on a sample row")

    @property
    def y(self) -> np.ndarray:
        return self.samples["label"].to_numpy().astype(np.int8)


@dataclass(frozen=True)
class Evaluation:
    """``body`` is evaluation.json; the rest feeds the report's plots and the UI's metadata."""

    body: dict[str, Any]
    threshold: ThresholdChoice
    backtest: BacktestResult
    predictions: Mapping[str, SplitPredictions]
    diagnosis: tuple[Diagnosis, ...] = ()


def dataset_summary(path: str, prices: pl.DataFrame) -> dict[str, Any]:
    """``dataset`` block from the feature table (one row per raw candle)."""
    return {
        "path": str(path),
        "rows": prices.height,
        "first_timestamp": iso(prices["timestamp"].min()),
        "last_timestamp": iso(prices["timestamp"].max()),
    }


def per_symbol_metrics(predictions: SplitPredictions, signal: np.ndarray, *,
                       confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Gate-split figures of each symbol: samples, signals, precision with its Wilson interval, base rate.

    A pooled precision can hide one symbol carrying the rest (or dragging them down); these rows
    say which. Without a ``symbol`` column the whole split is one symbol, ``""``.
    """
    samples = predictions.samples
    symbols = samples["symbol"].to_numpy() if "symbol" in samples.columns else np.full(samples.height, "")
    y, signal = predictions.y, np.asarray(signal, dtype=bool)
    out: dict[str, dict[str, Any]] = {}
    for symbol in dict.fromkeys(symbols.tolist()):
        rows = symbols == symbol
        n_signals, hits = int(signal[rows].sum()), int((signal[rows] & (y[rows] == 1)).sum())
        out[str(symbol)] = {
            "samples": int(rows.sum()), "signals": n_signals,
            "precision": hits / n_signals if n_signals else None,
            "precision_ci95": list(wilson_interval(hits, n_signals, confidence)),
            "base_rate": float(y[rows].mean()),
        }
    return out


def untested_symbols(prices: pl.DataFrame, tested: Collection[str], split: str,
                     split_span: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every symbol of ``prices`` with no sample in the gate split, with its candles' span and why.

    The splits cut every symbol at the same calendar dates, so in a ragged universe a symbol
    whose history ends before the test period starts is not tested at all; the pooled verdict,
    metrics and buy-and-hold then speak for the others only, and must say so.
    ``split_span`` is the split's ``splits`` block (``start``/``end`` ISO timestamps).
    """
    if "symbol" not in prices.columns:
        return {}
    spans = (prices.group_by("symbol", maintain_order=True)
             .agg(first=pl.col("timestamp").min(), last=pl.col("timestamp").max()))
    start, end = str(split_span.get("start") or ""), str(split_span.get("end") or "")
    out = {}
    for symbol, first, last in spans.iter_rows():
        if str(symbol) in tested:
            continue
        first, last = iso(first), iso(last)
        if last < start:
            reason = f"its last candle ({last[:10]}) is before the {split} split starts ({start[:10]})"
        elif first > end:
            reason = f"its first candle ({first[:10]}) is after the {split} split ends ({end[:10]})"
        else:
            reason = (f"its candles in the {split} split ({start[:10]} → {end[:10]}) are too few for one "
                      f"window and label horizon")
        out[str(symbol)] = {"first_timestamp": first, "last_timestamp": last, "reason": reason}
    return out


def symbol_backtests(predictions: SplitPredictions, signal: np.ndarray, prices: pl.DataFrame,
                     config: Any) -> dict[str, BacktestResult]:
    """One backtest per symbol of the split (its samples against its own price rows).

    The random-entry seed is offset per symbol so two symbols never share their random draws;
    the first symbol keeps the configured seed, so a single-symbol dataset is unchanged.
    """
    samples = predictions.samples
    if "symbol" not in samples.columns:
        return {"": backtest(samples, signal, prices, config)}
    symbols = samples["symbol"].to_numpy()
    out: dict[str, BacktestResult] = {}
    for i, symbol in enumerate(dict.fromkeys(symbols.tolist())):
        rows = symbols == symbol
        sym_prices = prices.filter(pl.col("symbol") == symbol).drop("symbol")
        seeded = dataclasses.replace(config, seed=config.seed + i)
        out[str(symbol)] = backtest(samples.filter(pl.Series(rows)), signal[rows], sym_prices, seeded)
    return out


def split_summaries(frame: pl.DataFrame, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``splits`` block from ``SplitDataset.frame`` (columns split, is_sample, timestamp, label).

    rows = processed rows of the split, sequences = its samples (windows), start/end its first
    and last timestamps, positive_rate the label mean over its samples.
    """
    stats = (frame.group_by("split")
             .agg(rows=pl.len(),
                  sequences=pl.col("is_sample").sum(),
                  start=pl.col("timestamp").min(),
                  end=pl.col("timestamp").max(),
                  positive_rate=pl.col("label").filter(pl.col("is_sample")).cast(pl.Float64).mean()))
    by_name = {row["split"]: row for row in stats.iter_rows(named=True)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"split_summaries: the frame has no rows for split(s) {missing}")
    return {n: {"rows": int(by_name[n]["rows"]), "sequences": int(by_name[n]["sequences"]),
                "start": iso(by_name[n]["start"]), "end": iso(by_name[n]["end"]),
                "positive_rate": by_name[n]["positive_rate"]} for n in names}


def training_summary(history: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """``training`` block from ``Trainer.train()``'s history, plus the best epoch's val loss."""
    missing = [k for k in HISTORY_KEYS if k not in history]
    if missing:
        raise ValueError(f"training history lacks {missing}; Trainer.train() provides them")
    out = {k: history[k] for k in HISTORY_KEYS}
    val_loss = history.get("val_loss") or []
    best = int(history["best_epoch"])
    out["best_val_loss"] = val_loss[best - 1] if 0 < best <= len(val_loss) else None
    out["seed"] = seed
    return out


def no_trades_reason(threshold: ThresholdChoice, split: str, result: BacktestResult) -> str | None:
    """Why a backtest holds no trades, or ``None`` when it holds some."""
    if threshold.abstains:
        return "no trades: the model abstains (no val threshold met the precision rule), so it gives no signals"
    if result.trades == 0:
        return f"no trades: no signals on {split} at threshold {threshold.threshold:.4f}"
    return None


def backtest_block(split: str, threshold: ThresholdChoice, result: BacktestResult) -> dict[str, Any]:
    """The ``backtest`` block: ``BacktestResult.to_dict()`` plus the split and the words the report shows."""
    return {"split": split, **result.to_dict(),
            "annualization": annualization_note(result.annualized, result.period_days, result.periods_per_year,
                                                split),
            "no_trades_reason": no_trades_reason(threshold, split, result)}


def build_evaluation(variant: VariantConfig, *, dataset: Mapping[str, Any],
                     splits: Mapping[str, Mapping[str, Any]], training: Mapping[str, Any],
                     verdict: GateVerdict, metrics: Mapping[str, Mapping[str, Any]],
                     backtest_result: BacktestResult, diagnosis: Sequence[Diagnosis] = (),
                     per_symbol: Mapping[str, Any] | None = None,
                     symbol_backtest: Mapping[str, Any] | None = None,
                     untested: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the evaluation.json body from computed parts.

    ``verdict`` is :func:`patx_core.evaluation.gate.judge`'s on the gate split (its threshold and
    gate block go in as they are); ``metrics`` maps "val" (and "test" when the variant has one)
    to ``classification_metrics``, the gate split's being the verdict's;
    ``diagnosis`` is ``patx_core.evaluation.diagnosis.diagnose``'s list; ``per_symbol`` the gate split's
    :func:`per_symbol_metrics` and ``symbol_backtest`` each symbol's backtest block when the
    portfolio holds more than one; ``untested`` the :func:`untested_symbols` (none tested on the
    gate split, with the reason). The result is JSON-safe
    (NaN/inf → null) and key order is stable for diffs.
    """
    gate_split = variant.gate_split
    if gate_split not in metrics:
        raise ValueError(f"build_evaluation: no metrics for the gate split {gate_split!r}")
    if verdict.gate["split"] != gate_split or metrics[gate_split] != verdict.metrics:
        raise ValueError(f"build_evaluation: the verdict judged {verdict.gate['split']!r}, not the gate split "
                         f"{gate_split!r} with these metrics")
    threshold, gate = verdict.choice, verdict.gate
    f1 = metrics[gate_split]["f1"]
    body = {
        "variant": variant.name,
        "diagnosis": [d.to_dict() for d in diagnosis],
        "dataset": dict(dataset),
        "splits": {k: dict(v) for k, v in splits.items()},
        "training": dict(training),
        "threshold": threshold.to_dict(),
        "metrics": {k: dict(v) for k, v in metrics.items()},
        "backtest": {**backtest_block(gate_split, threshold, backtest_result),
                     **({"portfolio": "equal-weight", "per_symbol": dict(symbol_backtest)} if symbol_backtest else {})},
        "per_symbol": {"split": gate_split, "symbols": dict(per_symbol or {}), "untested": dict(untested or {})},
        "checks": {
            "precision_gate": gate,
            "f1": {"passed": f1 is not None and f1 >= MIN_F1, "split": gate_split,
                   "min_f1": MIN_F1, "f1": f1},
        },
        "config": variant.to_dict(),
    }
    return json_safe(body)


def seed_study(variant: VariantConfig, predictions: Mapping[int, Mapping[str, SplitPredictions]], *,
               best_epochs: Mapping[int, int] | None) -> dict[str, Any]:
    """The ``seeds`` block: each seed's model judged by the evaluation's own rules (threshold on
    val, the precision gate on the gate split), and how many seeds pass.

    ``predictions`` maps each seed (the champion candidate's first) to its val/test predictions.
    Answers whether a pass was luck of the initialization; the candidate is the first seed's
    model, or with ``train.ensemble`` the mean of all of them (``ensemble: true``), judged apart.
    """
    gate_split, ev = variant.gate_split, variant.eval
    rows = []
    for seed, preds in predictions.items():
        val, gate_preds = preds["val"], preds[gate_split]
        verdict = judge(val.y, val.prob, gate_preds.y, gate_preds.prob, ev, split=gate_split)
        metrics, gate = verdict.metrics, verdict.gate
        rows.append({"seed": int(seed), "passed": gate["passed"], "precision": gate["precision"],
                     "precision_ci95": gate["precision_ci95"], "n_signals": gate["n_signals"],
                     "threshold": gate["threshold"], "roc_auc": metrics["roc_auc"],
                     "best_epoch": None if best_epochs is None else int(best_epochs[seed]),
                     "reason": gate["reason"]})
    return json_safe({"split": gate_split, "champion_seed": rows[0]["seed"], "ensemble": variant.train.ensemble,
                      "n_seeds": len(rows),
                      "passed": sum(r["passed"] for r in rows), "per_seed": rows})


def evaluate_variant(variant: VariantConfig, *, dataset_path: str, split_frame: pl.DataFrame,
                     prices: pl.DataFrame, history: Mapping[str, Any],
                     predictions: Mapping[str, SplitPredictions],
                     dataset_info: Mapping[str, Any] | None = None) -> Evaluation:
    """Threshold on val, metrics on val (+ test), backtest on the gate split, diagnosis, the body.

    ``predictions`` holds exactly the variant's evaluation splits ("val", plus "test" unless
    it is the ``seed`` layout); ``prices`` is the feature table's ``timestamp`` and
    ``entry_price`` (all rows, with ``symbol`` for a universe); ``split_frame`` is
    ``SplitDataset.frame``; ``history`` the trainer's (its per-epoch train accuracy/recall feed
    the single-class diagnosis); ``dataset_info`` (name, symbols, interval, source sha256, …)
    joins the ``dataset`` block. The backtest runs per symbol and reports their equal-weight
    portfolio.
    """
    expected = [s for s in variant.split.names if s != "train"]
    if sorted(predictions) != sorted(expected):
        raise ValueError(f"evaluate_variant: predictions for {sorted(predictions)}, "
                         f"variant {variant.name!r} needs {expected}")
    val, gate = predictions["val"], predictions[variant.gate_split]
    verdict = judge(val.y, val.prob, gate.y, gate.prob, variant.eval, split=variant.gate_split)
    choice = verdict.choice
    metrics = {s: verdict.metrics if s == variant.gate_split else
               classification_metrics(predictions[s].y, predictions[s].prob, choice.threshold,
                                      confidence=variant.eval.confidence) for s in expected}
    # An abstaining model trades nothing; its diagnostic max-F1 point never reaches the backtest.
    signal = verdict.signal
    per_symbol_bt = symbol_backtests(gate, signal, prices, variant.backtest)
    result = portfolio(per_symbol_bt)
    splits = split_summaries(split_frame, variant.split.names)
    found = diagnose(threshold=choice, metrics=metrics, probabilities={s: predictions[s].prob for s in expected},
                     gate_split=variant.gate_split, min_signals=variant.eval.min_signals, history=history,
                     train_base_rate=splits["train"]["positive_rate"], train_samples=splits["train"]["sequences"])
    per_symbol = per_symbol_metrics(gate, signal, confidence=variant.eval.confidence)
    # Without a symbol column in the samples the split is one series: nothing to leave untested.
    untested = (untested_symbols(prices, set(per_symbol), variant.gate_split, splits[variant.gate_split])
                if "symbol" in gate.samples.columns else {})
    if untested:
        log.warning("evaluation %s: tested on %d of %d symbols; untested: %s", variant.name, len(per_symbol),
                    len(per_symbol) + len(untested), "; ".join(f"{s}: {u['reason']}" for s, u in untested.items()))
    body = build_evaluation(
        variant,
        dataset={**dataset_summary(dataset_path, prices), **dict(dataset_info or {})},
        per_symbol=per_symbol, untested=untested,
        symbol_backtest={s: {k: v for k, v in r.to_dict().items() if k != "random_baseline"}
                         for s, r in per_symbol_bt.items()} if len(per_symbol_bt) > 1 else None,
        splits=splits,
        training=training_summary(history, variant.train.seed),
        verdict=verdict,
        metrics=metrics,
        backtest_result=result,
        diagnosis=found,
    )
    log.info("evaluation %s: %s; diagnosis %s", variant.name, body["checks"]["precision_gate"]["reason"],
             [d.code for d in found] or "none")
    return Evaluation(body=body, threshold=choice, backtest=result, predictions=predictions, diagnosis=tuple(found))
