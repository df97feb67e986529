"""evaluation.json assembly: the contract's fields, the precision gate and its reason text."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from patx_core.config import VariantConfig
from patx_core.metrics import ThresholdChoice
from patx_core.evaluation_json import SplitPredictions, evaluate_variant, precision_gate

SEED_SPLIT = {"split": {"train": 0.8, "val": 0.2, "test": 0.0}}


def synthetic(n: int = 1200, *, skill: float, test_shift: float = 0.0, with_test: bool = True, seed: int = 0):
    """A daily price table, a SplitDataset-like frame and predictions with a planted skill."""
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
    prob = np.clip(0.3 + skill * label + 0.15 * rng.standard_normal(rows.size), 0, 1)
    prob = np.where(split == "test", np.clip(prob + test_shift, 0, 1), prob)
    names = ("val", "test") if with_test else ("val",)
    preds = {s: SplitPredictions(samples=frame.filter(pl.col("split") == s), prob=prob[split == s]) for s in names}
    history = {"train_loss": [0.69, 0.65, 0.62], "val_loss": [0.68, 0.66, 0.67], "best_epoch": 2,
               "epochs_run": 3, "seconds": 4.2, "device": "cpu", "params": 1234}
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
    assert body["threshold"] == body["threshold_rule"]["threshold"] == ev.threshold.threshold
    assert body["threshold_rule"]["reachable"] is True
    for split in ("val", "test"):
        assert {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "brier", "n_signals",
                "base_rate", "lift", "precision_ci95"} <= set(body["metrics"][split])
    assert {"trades", "total_return", "buy_and_hold_return", "sharpe", "max_drawdown", "cost_bps",
            "hit_rate", "annualized_return", "exposure", "random_baseline",
            "strategy_percentile"} <= set(body["backtest"])
    gate = body["checks"]["precision_gate"]
    test = body["metrics"]["test"]
    assert gate["passed"] is True and gate["split"] == "test" and gate["min_precision"] == 0.7
    assert gate["precision"] == test["precision"] > 0.7 and gate["n_signals"] == test["n_signals"] >= 30
    assert gate["precision_ci95"] == test["precision_ci95"] and gate["threshold"] == body["threshold"]
    assert gate["reason"].startswith(f"test precision {test['precision']:.2f}")
    assert body["checks"]["f1"] == {"passed": True, "split": "test", "min_f1": 0.5, "f1": test["f1"]}
    assert body["backtest"]["n_signals"] == test["n_signals"]  # the backtest trades the gate split


def test_noise_fails_and_says_why() -> None:
    ev = _evaluate(VariantConfig.from_dict("noise", FAST), skill=0.0)
    gate = ev.body["checks"]["precision_gate"]
    assert gate["passed"] is False
    assert ev.body["threshold_rule"]["reachable"] is False
    assert "target unreachable on val: threshold fell back to max-F1" in gate["reason"]


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


CHOICE = ThresholdChoice(threshold=0.61, reachable=True, rule="r", val_precision=0.8,
                         val_precision_lower=0.71, n_signals=50)


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


def test_precision_gate_reports_unreachable_target() -> None:
    fallback = ThresholdChoice(threshold=0.2, reachable=False, rule="r", val_precision=0.4,
                               val_precision_lower=0.3, n_signals=300)
    gate = precision_gate("test", _metrics(0.45, 280), fallback, target=0.7, min_signals=30)
    assert not gate["passed"] and gate["threshold_reachable"] is False
    assert gate["reason"].endswith("; target unreachable on val: threshold fell back to max-F1")
