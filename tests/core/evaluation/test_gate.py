"""One gate: the nightly evaluation and a walk-forward fold reach the same verdict on the same predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from patx_core.data.contract import validate_raw
from patx_core.data.splits import build_feature_table, split_at_cutoffs
from patx_core.data.universe import SYMBOL
from patx_core.evaluation import walk_forward as wf
from patx_core.evaluation.gate import judge
from patx_core.evaluation.metrics import wilson_interval
from patx_core.evaluation.record import SplitPredictions, evaluate_variant
from patx_core.settings.config import BacktestConfig, DataConfig, EvalConfig, ModelConfig, TrainConfig, VariantConfig, WalkForwardConfig
from tests.synthetic import planted_candles

VARIANT = VariantConfig(
    name="gate_twin",
    data=DataConfig(feature_set="relative", window_size=16),
    model=ModelConfig(window_size=16, d_model=16, n_heads=2, n_layers=1, d_ff=32, head_hidden=8),
    train=TrainConfig(max_epochs=1, device="cpu"),
    eval=EvalConfig(min_signals=10),
    backtest=BacktestConfig(n_random=50),
    walk_forward=WalkForwardConfig(folds=2, test_candles=300),
)
HISTORY = {"train_loss": [0.69], "val_loss": [0.68], "best_epoch": 1, "epochs_run": 1, "seconds": 0.1,
           "device": "cpu", "params": 1}


def _probabilities(labels: np.ndarray, split: str, skill: float) -> np.ndarray:
    """``0.3 + skill·label + noise``, rounded to 0.01 so that test probabilities tie with the val
    threshold: a gate that signals at ``>`` instead of ``>=`` then gives other signals."""
    rng = np.random.default_rng({"val": 1, "test": 2}[split])
    return np.round(np.clip(0.3 + skill * labels + 0.15 * rng.standard_normal(labels.size), 0.0, 1.0), 2)


class _StubTrainer:
    """Stands in for the trainer: the fold's 'model' is the fixed probabilities of ``_probabilities``."""

    def __init__(self, model_config: Any, train_config: Any, windows: Any) -> None:
        self.model = torch.nn.Linear(1, 1)

    def train(self) -> dict[str, Any]:
        return dict(HISTORY)


def _both_paths(monkeypatch: pytest.MonkeyPatch, skill: float) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """The fold row of ``run_fold`` and the evaluation.json body of ``evaluate_variant``, both fed
    the same val and test predictions of the first fold; and the test probabilities."""
    table = build_feature_table(validate_raw(planted_candles(1500, seed=3)), VARIANT.data, VARIANT.labels)
    plan = wf.plan_folds(table, VARIANT)[0]
    # walk-forward imports the training loop where it trains (so planning a fold needs no torch):
    # the stubs replace the names it imports, at their source
    monkeypatch.setattr("patx_core.model.trainer.Trainer", _StubTrainer)
    monkeypatch.setattr("patx_core.model.inference.predict_proba",
                        lambda model, windows, split: _probabilities(windows.split_labels(split), split, skill))
    fold = wf.run_fold(table, plan, VARIANT)

    seen = wf.fold_table(table, plan, VARIANT.labels.horizon)
    ds = split_at_cutoffs(seen, plan.cutoffs(), VARIANT.labels, VARIANT.data)
    samples = {s: ds.frame[ds.sample_rows(s)] for s in ("val", "test")}
    probs = {s: _probabilities(samples[s]["label"].to_numpy().astype(np.int8), s, skill) for s in samples}
    np.testing.assert_array_equal(samples["test"]["label"].to_numpy(), ds.to_windows().split_labels("test"))
    prices = seen.select([c for c in (SYMBOL, "timestamp", "entry_price") if c in seen.columns])
    body = evaluate_variant(VARIANT, dataset_path="x.parquet", split_frame=ds.frame, prices=prices, history=HISTORY,
                            predictions={s: SplitPredictions(samples=samples[s], prob=probs[s]) for s in samples}).body
    return fold.row, body, probs["test"]


def _assert_same_verdict(row: dict[str, Any], body: dict[str, Any]) -> None:
    gate = body["checks"]["precision_gate"]
    assert gate["split"] == "test"
    assert row["gate_passed"] == gate["passed"]
    assert row["threshold_reachable"] == gate["threshold_reachable"] == body["threshold"]["reachable"]
    assert row["threshold"] == gate["threshold"] == body["threshold"]["value"]
    assert row["n_signals"] == gate["n_signals"] == body["metrics"]["test"]["n_signals"]
    assert row["precision"] == gate["precision"]
    assert row["precision_ci95"] == gate["precision_ci95"]
    assert row["gate_reason"] == gate["reason"]
    # The same signals reach the backtest on both paths.
    assert row["trades"] == body["backtest"]["trades"]
    assert row["strategy_return"] == pytest.approx(body["backtest"]["total_return"], abs=1e-12)


def test_a_passing_model_gets_the_same_verdict_nightly_and_in_a_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    row, body, p_test = _both_paths(monkeypatch, skill=0.45)
    _assert_same_verdict(row, body)
    assert row["gate_passed"] is True and row["threshold_reachable"] is True
    assert row["n_signals"] >= 10 and row["precision"] > 0.7
    # Test probabilities sit exactly on the threshold, so ">=" against ">" changes the signals.
    assert np.count_nonzero(p_test == row["threshold"]) > 0


def test_an_abstaining_model_gets_the_same_verdict_nightly_and_in_a_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    row, body, _ = _both_paths(monkeypatch, skill=0.0)
    _assert_same_verdict(row, body)
    assert row["gate_passed"] is False and row["threshold_reachable"] is False and row["threshold"] is None
    assert row["n_signals"] == 0 and row["trades"] == 0 and row["precision"] is None
    assert row["gate_reason"].startswith("abstains: ")


def test_judge_on_a_hand_built_case() -> None:
    # val: 20 positives at 0.9, 20 negatives at 0.1. At 0.9 precision is 20/20 (Wilson lower
    # bound 0.839 >= 0.7); at 0.1 it is 20/40. The lowest threshold meeting the rule is 0.9.
    y_val = np.r_[np.ones(20), np.zeros(20)].astype(np.int8)
    p_val = np.r_[np.full(20, 0.9), np.full(20, 0.1)]
    # test: 12 rows exactly at 0.9 (10 positives), 28 at 0.1 (5 positives).
    y_test = np.r_[np.ones(10), np.zeros(2), np.ones(5), np.zeros(23)].astype(np.int8)
    p_test = np.r_[np.full(12, 0.9), np.full(28, 0.1)]
    v = judge(y_val, p_val, y_test, p_test, EvalConfig(min_signals=10), split="test")
    assert v.choice.threshold == 0.9 and not v.abstains
    np.testing.assert_array_equal(v.signal, np.r_[np.ones(12, bool), np.zeros(28, bool)])
    assert v.metrics["n_signals"] == 12 and v.metrics["true_positives"] == 10
    assert v.metrics["precision"] == pytest.approx(10 / 12, abs=1e-12)
    lo, hi = wilson_interval(10, 12)
    assert (lo, hi) == pytest.approx((0.5520, 0.9530), abs=5e-4)  # Wilson, z = 1.96, by hand
    assert v.passed is True and v.gate["precision_ci95"] == [lo, hi]
    assert v.reason == f"test precision 0.83 [{lo:.2f}, {hi:.2f}] on 12 signals vs base rate 0.38 — above 0.7 with >= 10 signals"

    # The same test split against a val that never reaches the bound: abstain, no signal at all.
    flat = judge(np.r_[np.ones(20), np.zeros(20)].astype(np.int8), np.full(40, 0.5), y_test, p_test,
                 EvalConfig(min_signals=10), split="test")
    assert flat.abstains and flat.choice.threshold is None and not flat.signal.any()
    assert flat.passed is False and flat.metrics["n_signals"] == 0
    assert flat.reason.startswith("abstains: no val threshold had a 95% Wilson lower bound")
