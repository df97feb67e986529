"""evaluation.json assembly: the contract's fields, the precision gate and its reason, abstention."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from patx_core.settings.config import VariantConfig
from patx_core.evaluation.gate import precision_gate
from patx_core.evaluation.record import SplitPredictions, evaluate_variant
from patx_core.evaluation.threshold import OperatingPoint, ThresholdChoice
from patx_core.model.trainer import _metrics as epoch_metrics

SEED_SPLIT = {"split": {"train": 0.8, "val": 0.2, "test": 0.0}}


def synthetic(n: int = 1200, *, skill: float, test_shift: float = 0.0, with_test: bool = True, seed: int = 0,
              spread: float = 0.15, base: float = 0.3, train_single_class: bool = False):
    """A daily price table, a SplitDataset-like frame and predictions with a planted skill.

    prob = base + skill·label + spread·noise (clipped to [0, 1]). The history's per-epoch train
    accuracy/recall are the trainer's own figures for ``prob >= 0.5`` on the train samples, or for
    "no signal" everywhere with ``train_single_class``.
    """
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(0.0003 + 0.012 * rng.standard_normal(n)))
    ts = pl.datetime_range(pl.datetime(2015, 1, 1), pl.datetime(2015, 1, 1) + pl.duration(days=n - 1),
                           "1d", time_zone="UTC", eager=True)
    prices = pl.DataFrame({"timestamp": ts, "entry_price": close})
    rows = np.arange(200, n - 10)
    holding = rng.integers(1, 11, rows.size)
    ret = close[rows + holding] / close[rows] - 1
    label = (ret > 0.005).astype(np.int8)
    n_tr = int(rows.size * (0.7 if with_test else 0.8))
    n_va = int(rows.size * 0.15) if with_test else rows.size - n_tr
    split = np.array(["train"] * n_tr + ["val"] * n_va + ["test"] * (rows.size - n_tr - n_va))
    frame = pl.DataFrame({"timestamp": ts.gather(rows), "entry_price": close[rows], "label": label,
                          "exit_index": rows + holding, "trade_return": ret, "holding": holding,
                          "split": split, "is_sample": np.ones(rows.size, bool)})
    prob = np.clip(base + skill * label + spread * rng.standard_normal(rows.size), 0, 1)
    prob = np.where(split == "test", np.clip(prob + test_shift, 0, 1), prob)
    names = ("val", "test") if with_test else ("val",)
    preds = {s: SplitPredictions(samples=frame.filter(pl.col("split") == s), prob=prob[split == s]) for s in names}
    y_train = label[split == "train"].astype(bool)
    called = np.zeros(y_train.size, bool) if train_single_class else prob[split == "train"] >= 0.5
    train = epoch_metrics(0.6 * y_train.size, float((called & y_train).sum()), float(called.sum()),
                          float(y_train.sum()), y_train.size)
    history = {"train_loss": [0.69, 0.65, 0.62], "val_loss": [0.68, 0.66, 0.67], "best_epoch": 2,
               "epochs_run": 3, "seconds": 4.2, "device": "cpu", "params": 1234,
               "train_accuracy": [0.5, train["accuracy"], 0.5], "train_recall": [0.5, train["recall"], 0.5]}
    return prices, frame, preds, history


def _evaluate(variant: VariantConfig, **kwargs):
    prices, frame, preds, history = synthetic(**kwargs)
    return evaluate_variant(variant, dataset_path="data/raw/x.parquet", split_frame=frame, prices=prices,
                            history=history, predictions=preds)


FAST = {"backtest": {"n_random": 100}}


def test_body_follows_the_contract_and_passes_on_a_planted_pattern() -> None:
    ev = _evaluate(VariantConfig.from_dict("baseline", FAST), skill=0.4)
    body = ev.body
    json.dumps(body, allow_nan=False)
    assert body["variant"] == "baseline"
    assert body["dataset"] == {"path": "data/raw/x.parquet", "rows": 1200,
                               "first_timestamp": "2015-01-01T00:00:00+00:00",
                               "last_timestamp": "2018-04-14T00:00:00+00:00"}
    assert list(body["splits"]) == ["train", "val", "test"]
    assert body["splits"]["val"]["end"] < body["splits"]["test"]["start"]
    assert {"rows", "sequences", "start", "end", "positive_rate"} <= set(body["splits"]["test"])
    assert body["training"] == {"epochs_run": 3, "best_epoch": 2, "seconds": 4.2, "device": "cpu",
                                "params": 1234, "best_val_loss": 0.66, "seed": 42}
    assert body["diagnosis"] == []  # a learnable pattern names no failure mode
    assert body["threshold"] == {"value": ev.threshold.threshold, "rule": "wilson_lower_bound", "reachable": True,
                                 "explanation": ev.threshold.explanation, "val_precision": ev.threshold.val_precision,
                                 "val_precision_lower": ev.threshold.val_precision_lower,
                                 "n_signals": ev.threshold.n_signals, "diagnostic": None}
    for split in ("val", "test"):
        assert {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "brier", "n_signals",
                "base_rate", "lift", "precision_ci95"} <= set(body["metrics"][split])
    assert {"trades", "total_return", "buy_and_hold_return", "sharpe", "max_drawdown", "cost_bps",
            "hit_rate", "annualized_return", "exposure", "random_baseline", "strategy_percentile",
            "annualized", "period_days", "annualization", "no_trades_reason"} <= set(body["backtest"])
    assert body["backtest"]["no_trades_reason"] is None
    gate = body["checks"]["precision_gate"]
    test = body["metrics"]["test"]
    assert gate["passed"] is True and gate["split"] == "test" and gate["min_precision"] == 0.7
    assert gate["precision"] == test["precision"] > 0.7 and gate["n_signals"] == test["n_signals"] >= 30
    assert gate["precision_ci95"] == test["precision_ci95"] and gate["threshold"] == body["threshold"]["value"]
    assert gate["reason"].startswith(f"test precision {test['precision']:.2f}")
    assert body["checks"]["f1"] == {"passed": True, "split": "test", "min_f1": 0.5, "f1": test["f1"]}
    assert body["backtest"]["n_signals"] == test["n_signals"]  # the backtest trades the gate split


def test_noise_abstains_with_no_signals_anywhere_and_the_diagnostic_point_apart() -> None:
    ev = _evaluate(VariantConfig.from_dict("noise", FAST), skill=0.0)
    body = ev.body
    json.dumps(body, allow_nan=False)
    th = body["threshold"]
    assert th["value"] is None and th["rule"] == "abstain" and th["reachable"] is False and th["n_signals"] == 0
    assert all(m["n_signals"] == 0 and m["precision"] is None for m in body["metrics"].values())
    bt = body["backtest"]
    assert bt["trades"] == bt["n_signals"] == 0 and bt["total_return"] == 0.0
    assert bt["no_trades_reason"].startswith("no trades: the model abstains")
    gate = body["checks"]["precision_gate"]
    assert gate["passed"] is False and gate["threshold"] is None and gate["threshold_reachable"] is False
    assert gate["reason"].startswith("abstains")
    # The max-F1 point is reported under the diagnostic key only, and it would have signalled:
    # the zero signals above are the abstention, not a threshold that happened to fire nowhere.
    diag = th["diagnostic"]
    assert set(diag) == {"threshold", "val_precision", "val_precision_lower", "val_f1", "n_signals"}
    val = ev.predictions["val"]
    assert diag["n_signals"] == int((val.prob >= diag["threshold"]).sum()) > 0
    assert diag["val_precision"] == pytest.approx(val.y[val.prob >= diag["threshold"]].mean())
    assert (ev.predictions["test"].prob >= diag["threshold"]).sum() > 0
    assert "abstained" in [d["code"] for d in body["diagnosis"]]


def test_a_test_period_under_a_year_is_not_annualized() -> None:
    bt = _evaluate(VariantConfig.from_dict("baseline", FAST), skill=0.4).body["backtest"]
    assert bt["period_days"] < 365 and bt["annualized"] is False
    assert bt["annualized_return"] is None and bt["sharpe"] is None
    assert bt["annualization"] == f"not annualized (test period {bt['period_days']:.0f} days)"
    ev = _evaluate(VariantConfig.from_dict("baseline", FAST), n=4000, skill=0.4)
    long = ev.body["backtest"]
    assert long["period_days"] >= 365 and long["annualized"] is True
    # Daily candles every calendar day: 365.25 per year. The figures restated from the equity curve.
    assert long["periods_per_year"] == pytest.approx(365.25, rel=1e-12)
    curve = ev.backtest.equity["strategy"].to_numpy()
    assert long["total_return"] == pytest.approx(curve[-1] - 1, rel=1e-12)
    assert long["annualized_return"] == pytest.approx(curve[-1] ** (365.25 / (curve.size - 1)) - 1, rel=1e-9)
    steps = np.diff(np.r_[1.0, curve]) / np.r_[1.0, curve[:-1]]
    assert long["sharpe"] == pytest.approx(steps.mean() / steps.std(ddof=1) * np.sqrt(365.25), rel=1e-9)
    assert long["sharpe"] > 0 and long["total_return"] > 0  # the planted skill trades at a profit
    assert long["annualization"].startswith("annualized at ")


def test_seed_variant_is_judged_on_val_without_test_blocks() -> None:
    ev = _evaluate(VariantConfig.from_dict("seed", {**SEED_SPLIT, **FAST}), skill=0.4, with_test=False)
    body = ev.body
    assert list(body["splits"]) == ["train", "val"] and list(body["metrics"]) == ["val"]
    assert body["checks"]["precision_gate"]["split"] == "val" and body["backtest"]["split"] == "val"
    assert "optimistic" in body["checks"]["precision_gate"]["reason"]


def test_threshold_ignores_test_predictions() -> None:
    variant = VariantConfig.from_dict("baseline", FAST)
    a = _evaluate(variant, skill=0.4)
    b = _evaluate(variant, skill=0.4, test_shift=0.3)  # every test probability moved
    assert a.threshold == b.threshold
    assert a.body["metrics"]["val"] == b.body["metrics"]["val"]
    assert a.body["metrics"]["test"] != b.body["metrics"]["test"]


def test_predictions_must_match_the_variant_splits() -> None:
    prices, frame, preds, history = synthetic(skill=0.4)
    with pytest.raises(ValueError, match="needs"):
        evaluate_variant(VariantConfig.from_dict("baseline", FAST), dataset_path="x", split_frame=frame,
                         prices=prices, history=history, predictions={"val": preds["val"]})


def _metrics(precision: float | None, n: int, lo: float = 0.4, hi: float = 0.9) -> dict:
    return {"precision": precision, "n_signals": n, "precision_ci95": [lo, hi], "base_rate": 0.31,
            "lift": None if precision is None else precision / 0.31}


CHOICE = ThresholdChoice(threshold=0.61, explanation="r", val_precision=0.8, val_precision_lower=0.71, n_signals=50)


@pytest.mark.parametrize(("metrics", "passed", "reason"), [
    (_metrics(0.75, 64, 0.63, 0.84), True,
     "test precision 0.75 [0.63, 0.84] on 64 signals vs base rate 0.31 — above 0.7 with >= 30 signals"),
    (_metrics(0.52, 64, 0.41, 0.63), False,
     "test precision 0.52 [0.41, 0.63] on 64 signals vs base rate 0.31 — not above 0.7"),
    (_metrics(0.70, 100, 0.60, 0.78), False,  # the bar is strict: exactly 0.70 does not pass
     "test precision 0.70 [0.60, 0.78] on 100 signals vs base rate 0.31 — not above 0.7"),
    (_metrics(1.0, 4, 0.51, 1.0), False,
     "only 4 signals < 30 on test (test precision 1.00 [0.51, 1.00] on 4 signals vs base rate 0.31)"),
    (_metrics(None, 0, 0.0, 1.0), False, "no signals on test at threshold 0.6100 (0 < 30)"),
])
def test_precision_gate_logic_and_reason(metrics: dict, passed: bool, reason: str) -> None:
    gate = precision_gate("test", metrics, CHOICE, target=0.7, min_signals=30)
    assert gate["passed"] is passed
    assert gate["reason"] == reason


def test_precision_gate_of_an_abstaining_model_fails_and_says_abstains() -> None:
    abstain = ThresholdChoice(threshold=None, explanation="no val threshold met the rule", val_precision=None,
                              val_precision_lower=None, n_signals=0,
                              diagnostic=OperatingPoint(threshold=0.2, val_precision=0.4, val_precision_lower=0.3,
                                                        val_f1=0.5, n_signals=300))
    gate = precision_gate("test", _metrics(None, 0, 0.0, 1.0), abstain, target=0.7, min_signals=30)
    assert not gate["passed"] and gate["threshold"] is None and gate["threshold_reachable"] is False
    assert gate["reason"] == "abstains: no val threshold met the rule, so there are no signals on test"
