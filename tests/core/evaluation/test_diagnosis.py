"""Each named failure mode fires on a case built to provoke it, and none fires on a learnable pattern."""

from __future__ import annotations

import numpy as np
import pytest

from patx_core.settings.config import VariantConfig
from patx_core.evaluation.diagnosis import (
    COLLAPSED_WIDTH,
    collapsed_probabilities,
    no_ranking_skill,
    single_class_on_train,
    too_few_signals,
)
from patx_core.evaluation.record import evaluate_variant
from patx_core.evaluation.metrics import classification_metrics
from patx_core.evaluation.threshold import ThresholdChoice
from patx_core.model.trainer import _metrics as epoch_metrics
from tests.core.evaluation.test_record import SEED_SPLIT, synthetic

FAST = {"backtest": {"n_random": 50}}


def _codes(overrides: dict | None = None, **kwargs) -> list[str]:
    variant = VariantConfig.from_dict("v", {**FAST, **(overrides or {})})
    prices, frame, preds, history = synthetic(**kwargs)
    ev = evaluate_variant(variant, dataset_path="x", split_frame=frame, prices=prices, history=history,
                          predictions=preds)
    assert [d["code"] for d in ev.body["diagnosis"]] == [d.code for d in ev.diagnosis]
    assert all(d.explanation.endswith(".") and d.explanation.count(". ") == 0 for d in ev.diagnosis)
    return [d.code for d in ev.diagnosis]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_learnable_pattern_names_no_failure_mode(seed: int) -> None:
    assert _codes(skill=0.4, seed=seed) == []
    assert _codes(SEED_SPLIT, skill=0.4, seed=seed, with_test=False) == []


def test_noise_abstains_and_has_no_ranking_skill_but_is_not_collapsed() -> None:
    # Probabilities spread over ~[0.05, 0.55] but unrelated to the labels.
    assert _codes(skill=0.0) == ["abstained", "no_ranking_skill"]


def test_a_narrow_band_is_named_collapsed_even_when_it_ranks_well() -> None:
    # Positives sit 0.05 above negatives inside [0.45, 0.55]: perfect ranking, squeezed output.
    assert _codes(skill=0.05, spread=0.01, base=0.47) == ["collapsed_probabilities"]


def test_a_threshold_that_barely_fires_on_test_is_too_few_signals() -> None:
    # Val as planted; every test probability 0.35 lower, so the val threshold seldom fires on test.
    assert _codes(skill=0.4, test_shift=-0.35) == ["too_few_signals"]


def test_a_model_that_never_signalled_on_train_is_single_class() -> None:
    assert _codes(skill=0.4, train_single_class=True) == ["single_class_on_train"]


# ---------------------------------------------------------------- the checks one by one


def test_collapsed_probabilities_reads_the_5_to_95_band() -> None:
    rng = np.random.default_rng(0)
    narrow = 0.2 + (COLLAPSED_WIDTH * 0.9) * rng.random(1000)
    wide = 0.2 + (COLLAPSED_WIDTH * 1.2) * rng.random(1000)
    found = collapsed_probabilities({"val": wide, "test": narrow})
    assert found is not None and found.code == "collapsed_probabilities"
    assert "test [0.21, 0.33]" in found.explanation and "val" not in found.explanation
    assert collapsed_probabilities({"val": wide, "test": wide}) is None
    # A few outliers do not make a collapsed model look spread.
    assert collapsed_probabilities({"test": np.r_[narrow, 0.0, 1.0]}) is not None


def test_no_ranking_skill_reads_the_roc_auc_interval() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.3).astype(int)
    noise = classification_metrics(y, rng.random(400), 0.5)
    found = no_ranking_skill("test", noise)
    assert found is not None and f"{noise['roc_auc']:.3f}" in found.explanation and "DeLong" in found.explanation
    skilled = classification_metrics(y, np.clip(0.3 + 0.3 * y + 0.1 * rng.standard_normal(400), 0, 1), 0.5)
    assert no_ranking_skill("test", skilled) is None
    assert no_ranking_skill("test", classification_metrics(np.zeros(5), np.linspace(0, 1, 5), 0.5)) is None


@pytest.mark.parametrize(("called", "fires"), [("none", True), ("all", True), ("some", False)])
def test_single_class_on_train_from_the_trainers_epoch_figures(called: str, fires: bool) -> None:
    y = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    pred = {"none": np.zeros(100, bool), "all": np.ones(100, bool), "some": np.arange(100) % 3 == 0}[called]
    m = epoch_metrics(60.0, float((pred & y).sum()), float(pred.sum()), float(y.sum()), 100)
    history = {"best_epoch": 2, "train_accuracy": [0.5, m["accuracy"]], "train_recall": [0.5, m["recall"]]}
    found = single_class_on_train(history, 0.3, 100)
    assert (found is not None) is fires
    if called == "all":
        assert "signalled on every one of the 100 train samples" in found.explanation
    # Without the figures the check cannot be made, which is not a finding.
    assert single_class_on_train({"best_epoch": 2}, 0.3, 100) is None


def test_too_few_signals_is_not_repeated_for_an_abstaining_model() -> None:
    few = {"n_signals": 3}
    chosen = ThresholdChoice(threshold=0.6, explanation="r", val_precision=0.8, val_precision_lower=0.72, n_signals=40)
    abstain = ThresholdChoice(threshold=None, explanation="r", val_precision=None, val_precision_lower=None,
                              n_signals=0)
    assert too_few_signals(chosen, "test", few, 30).code == "too_few_signals"
    assert too_few_signals(chosen, "test", {"n_signals": 30}, 30) is None
    assert too_few_signals(abstain, "test", {"n_signals": 0}, 30) is None


def test_no_ranking_skill_is_judged_on_the_gate_split_not_on_val() -> None:
    """Val ranks well and test is a coin (or the reverse): only the gate split's interval decides."""
    from patx_core.evaluation.diagnosis import diagnose

    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.3).astype(int)
    coin = rng.random(400)
    skilled = np.clip(0.3 + 0.3 * y + 0.1 * rng.standard_normal(400), 0, 1)
    choice = ThresholdChoice(threshold=0.5, explanation="x", val_precision=0.8, val_precision_lower=0.72, n_signals=40)

    def codes(val: np.ndarray, test: np.ndarray) -> list[str]:
        probs = {"val": val, "test": test}
        metrics = {s: classification_metrics(y, p, 0.5) for s, p in probs.items()}
        return [d.code for d in diagnose(threshold=choice, metrics=metrics, probabilities=probs, gate_split="test",
                                         min_signals=1, history={}, train_base_rate=None, train_samples=None)]

    assert "no_ranking_skill" not in codes(val=coin, test=skilled)
    assert "no_ranking_skill" in codes(val=skilled, test=coin)
