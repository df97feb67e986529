"""Wilson and DeLong intervals, classification metrics, and the val-only threshold rule or abstention."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from patx_core.settings.config import EvalConfig
from patx_core.evaluation.gate import judge
from patx_core.evaluation.metrics import classification_metrics, roc_auc_interval, wilson_interval
from patx_core.evaluation.threshold import RULE_ABSTAIN, RULE_WILSON, select_threshold


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    # Worked by hand from the Wilson formula with z = 1.959964 (95 %).
    (8, 10, 0.4902, 0.9433),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (70, 100, 0.6042, 0.7811),
])
def test_wilson_interval_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo90, hi90 = wilson_interval(8, 10, confidence=0.90)
    lo95, hi95 = wilson_interval(8, 10)
    assert lo95 < lo90 < 0.8 < hi90 < hi95  # a higher level gives a wider interval
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_classification_metrics_hand_example() -> None:
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.1, 0.6, 0.05])
    m = classification_metrics(y, p, 0.6)
    # signals: 0.9, 0.8, 0.7, 0.6 -> TP 2, FP 2; one positive (0.3) missed.
    assert m["n_signals"] == 4 and m["true_positives"] == 2
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["base_rate"] == pytest.approx(3 / 8)
    assert m["lift"] == pytest.approx(0.5 / (3 / 8))
    assert m["precision_ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    # ROC-AUC by pair counting: of 3 x 5 (pos, neg) pairs, the positive scores higher in 5 + 5 + 3.
    assert m["roc_auc"] == pytest.approx(13 / 15)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_classification_metrics_degenerate_cases_are_json_safe() -> None:
    no_signals = classification_metrics(np.array([0, 1, 0]), np.array([0.1, 0.2, 0.3]), 0.9)
    assert no_signals["n_signals"] == 0
    assert no_signals["precision"] is None and no_signals["lift"] is None
    assert no_signals["recall"] == 0.0 and no_signals["f1"] == 0.0
    assert no_signals["precision_ci95"] == [0.0, 1.0]
    one_class = classification_metrics(np.zeros(4), np.array([0.1, 0.7, 0.8, 0.2]), 0.5)
    assert one_class["roc_auc"] is None and one_class["pr_auc"] is None and one_class["recall"] is None
    assert one_class["precision"] == 0.0 and one_class["base_rate"] == 0.0 and one_class["lift"] is None
    for m in (no_signals, one_class):
        json.dumps(m, allow_nan=False)


def test_classification_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0/1"):
        classification_metrics(np.array([0.0, np.nan]), np.array([0.1, 0.2]), 0.5)
    with pytest.raises(ValueError, match="rows"):
        classification_metrics(np.array([0, 1]), np.array([0.1]), 0.5)


def _plain_rule(y: np.ndarray, p: np.ndarray, target: float, min_signals: int) -> float | None:
    """The plain rule, by brute force: lowest threshold with raw precision >= target."""
    best = None
    for t in np.unique(p):
        sig = p >= t
        if sig.sum() >= min_signals and y[sig].mean() >= target:
            best = t if best is None else min(best, t)
    return best


def _wilson_rule(y: np.ndarray, p: np.ndarray, cfg: EvalConfig) -> float | None:
    """The Wilson rule, by brute force with the scalar Wilson interval."""
    best = None
    for t in np.unique(p):
        sig = p >= t
        lower = wilson_interval(int(y[sig].sum()), int(sig.sum()))[0]
        if sig.sum() >= cfg.min_signals and lower >= cfg.target_precision:
            best = t if best is None else min(best, t)
    return best


def test_threshold_keeps_a_margin_where_the_plain_rule_lands_on_0_70() -> None:
    # 200 val scores, descending: 36 of the top 40 are positive, then 34 positives and
    # 26 negatives (cumulative 70/100 = exactly 0.70), then 100 negatives.
    y = np.r_[np.ones(36), np.zeros(4), np.ones(34), np.zeros(26), np.zeros(100)]
    p = np.linspace(0.99, 0.01, y.size)
    cfg = EvalConfig(target_precision=0.7, min_signals=30)
    plain = _plain_rule(y, p, 0.7, 30)
    assert plain == pytest.approx(p[99])
    assert y[p >= plain].mean() == pytest.approx(0.70)  # a coin flip whether it holds on test

    choice = select_threshold(y, p, cfg)
    assert choice.reachable
    assert choice.threshold > plain
    assert choice.threshold == pytest.approx(_wilson_rule(y, p, cfg))
    assert choice.val_precision_lower >= 0.7
    assert choice.n_signals == int((p >= choice.threshold).sum())
    assert choice.val_precision == pytest.approx(y[p >= choice.threshold].mean())
    assert choice.rule == RULE_WILSON and "Wilson lower bound" in choice.explanation
    assert choice.diagnostic is None
    block = choice.to_dict()
    assert block["value"] == choice.threshold and block["rule"] == "wilson_lower_bound"
    assert block["reachable"] is True and block["diagnostic"] is None


def test_threshold_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(600) < 0.35).astype(int)
    p = np.round(np.clip(0.25 + 0.6 * y + 0.2 * rng.standard_normal(600), 0, 1), 2)  # many ties
    cfg = EvalConfig(target_precision=0.8, min_signals=30)
    choice = select_threshold(y, p, cfg)
    assert choice.reachable
    assert choice.threshold == pytest.approx(_wilson_rule(y, p, cfg))


def test_noise_abstains_and_keeps_the_max_f1_point_apart() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    p = rng.random(400)
    choice = select_threshold(y, p, EvalConfig())
    assert choice.abstains and not choice.reachable and choice.rule == RULE_ABSTAIN
    assert choice.threshold is None and choice.n_signals == 0 and choice.val_precision is None
    assert "no val threshold had a 95% Wilson lower bound of precision >= 0.7" in choice.explanation
    # The diagnostic point is the F1 maximizer over every candidate threshold.
    d = choice.diagnostic
    f1 = [2 * y[p >= t].sum() / ((p >= t).sum() + y.sum()) for t in np.unique(p)]
    assert d.val_f1 == pytest.approx(max(f1))
    assert d.n_signals == int((p >= d.threshold).sum())
    assert d.val_precision == pytest.approx(y[p >= d.threshold].mean())
    block = choice.to_dict()
    assert block["value"] is None and block["rule"] == "abstain" and block["n_signals"] == 0
    assert block["diagnostic"]["threshold"] == d.threshold
    json.dumps(block, allow_nan=False)


def test_an_abstaining_threshold_gives_no_signals() -> None:
    y = np.array([1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    m = classification_metrics(y, p, None)
    assert m["n_signals"] == 0 and m["precision"] is None and m["recall"] == 0.0
    # The threshold-free figures still describe the probabilities.
    assert m["roc_auc"] == classification_metrics(y, p, 0.5)["roc_auc"] == pytest.approx(5 / 6)


def test_select_threshold_cannot_see_test() -> None:
    assert list(inspect.signature(select_threshold).parameters) == ["y_val", "p_val", "config"]
    # The gate takes test too, and its threshold still comes from val alone. By hand: 20/20
    # positives at 0.9 (Wilson lower bound 0.839 >= 0.7), 20/40 at 0.1, so 0.9 is the lowest.
    y_val = np.r_[np.ones(20), np.zeros(20)].astype(np.int8)
    p_val = np.r_[np.full(20, 0.9), np.full(20, 0.1)]
    cfg = EvalConfig(min_signals=10)
    y_test = np.random.default_rng(0).integers(0, 2, 50)
    for p_test in (np.full(50, 0.95), np.zeros(50), np.random.default_rng(1).random(50)):
        verdict = judge(y_val, p_val, y_test, p_test, cfg, split="test")
        assert verdict.choice == select_threshold(y_val, p_val, cfg)
        assert verdict.choice.threshold == 0.9 and verdict.choice.n_signals == 20
        assert verdict.metrics["n_signals"] == int((p_test >= 0.9).sum())


def _delong_by_pairs(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """AUC and DeLong variance from the definition: psi over every (positive, negative) pair."""
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (m, n)
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(psi.mean()), float(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)


def test_roc_auc_interval_is_delong_by_its_definition() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.3).astype(int)
    p = np.round(np.clip(0.3 + 0.2 * y + 0.2 * rng.standard_normal(300), 0, 1), 2)  # ties included
    auc, var = _delong_by_pairs(y, p)
    half = 1.959964 * np.sqrt(var)
    assert roc_auc_interval(y, p) == pytest.approx((auc - half, auc + half), abs=1e-6)
    assert classification_metrics(y, p, 0.5)["roc_auc_ci95"] == pytest.approx([auc - half, auc + half], abs=1e-6)


def test_roc_auc_interval_covers_half_on_noise_and_not_on_skill() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(500) < 0.3).astype(int)
    lo, hi = roc_auc_interval(y, rng.random(500))
    assert lo < 0.5 < hi
    lo, hi = roc_auc_interval(y, np.clip(0.3 + 0.3 * y + 0.15 * rng.standard_normal(500), 0, 1))
    assert lo > 0.5
    assert roc_auc_interval(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3])) is None  # one positive
