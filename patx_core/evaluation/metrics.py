"""Classification metrics with honest uncertainty, and the decision threshold chosen on val.

A precision figure alone misleads: 0.8 over 5 signals is luck. Every precision here travels
with its signal count and a Wilson interval, and the threshold rule asks for the Wilson
*lower* bound to reach the target, so a threshold that only grazes 0.70 on val is not
mistaken for one that will hold on test. ROC-AUC travels with its DeLong interval, so an
AUC of 0.52 on a few hundred samples reads as "no ranking skill", not as a small edge.

When no val threshold meets the rule, the model *abstains*: ``threshold`` is ``None`` and it
gives no signal anywhere. The best operating point it had (max F1 on val) is kept beside the
choice as a diagnostic, so a reader sees how far off it was, but nothing trades on it: trading
the max-F1 point of a model without skill is an always-long strategy in disguise.

Undefined values are ``None`` (JSON ``null``), never NaN:

- ``precision`` and ``lift``: ``None`` with zero signals (nothing was predicted);
- ``recall``: ``None`` when the split has no positives;
- ``f1``: ``None`` only when there are neither signals nor positives (0/0); with positives
  but no signals it is 0.0;
- ``roc_auc``: ``None`` when ``y`` holds a single class; ``pr_auc``: ``None`` without positives;
- ``roc_auc_ci95``: ``None`` with fewer than two samples of either class;
- ``lift``: also ``None`` when the base rate is 0.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
)

from patx_core.settings.config import EvalConfig

log = logging.getLogger(__name__)


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _wilson_arrays(successes: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized Wilson score bounds; n == 0 gives the uninformative [0, 1]."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    safe_n = np.where(n > 0, n, 1.0)
    p = k / safe_n
    z2 = z * z
    denom = 1.0 + z2 / safe_n
    center = (p + z2 / (2.0 * safe_n)) / denom
    half = z * np.sqrt(np.maximum(p * (1.0 - p) / safe_n + z2 / (4.0 * safe_n**2), 0.0)) / denom
    # k == 0 and k == n have exact endpoints 0 and 1; the formula leaves rounding dust there.
    lo = np.where((n > 0) & (k > 0), np.clip(center - half, 0.0, 1.0), 0.0)
    hi = np.where((n > 0) & (k < n), np.clip(center + half, 0.0, 1.0), 1.0)
    return lo, hi


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (here: precision = hits / signals).

    Chosen over the normal approximation because it stays inside [0, 1] and keeps sensible
    coverage at the small signal counts a trading model produces. ``n == 0`` → ``(0.0, 1.0)``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    lo, hi = _wilson_arrays(np.array([successes]), np.array([n]), _z(confidence))
    return float(lo[0]), float(hi[0])


def _check_inputs(y_true: np.ndarray, prob: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{what}: y has {y.size} rows but prob has {p.size}")
    if y.size == 0:
        raise ValueError(f"{what}: no samples")
    if not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError(f"{what}: labels must be 0/1 (no NaN), got values {np.unique(y)[:5].tolist()}")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"{what}: probabilities must be finite and in [0, 1]")
    return y.astype(np.int8), p


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def roc_auc_interval(y_true: np.ndarray, prob: np.ndarray,
                     confidence: float = 0.95) -> tuple[float, float] | None:
    """DeLong confidence interval of the ROC-AUC (normal approximation, clipped to [0, 1]).

    DeLong, DeLong & Clarke-Pearson (1988), computed with midranks (Sun & Xu 2014): each
    positive's share of negatives scored below it (ties count half) and each negative's share
    of positives scored above it are the AUC's structural components; their variances give
    the AUC's. Chosen over Hanley–McNeil because it makes no assumption about the score
    distributions. ``None`` with fewer than two samples of either class (no variance).
    """
    y, p = _check_inputs(y_true, prob, "roc_auc_interval")
    pos, neg = p[y == 1], p[y == 0]
    m, n = pos.size, neg.size
    if m < 2 or n < 2:
        return None
    combined = rankdata(np.r_[pos, neg])  # midranks over both classes
    below = (combined[:m] - rankdata(pos)) / n  # (m,) per positive: negatives below it
    above = 1.0 - (combined[m:] - rankdata(neg)) / m  # (n,) per negative: positives above it
    auc = float(below.mean())
    half = _z(confidence) * math.sqrt(below.var(ddof=1) / m + above.var(ddof=1) / n)
    return max(0.0, auc - half), min(1.0, auc + half)


def classification_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float | None, *,
                           confidence: float = 0.95) -> dict[str, Any]:
    """Metrics of ``prob >= threshold`` as the buy signal, JSON-safe (see module docstring).

    ``threshold=None`` is an abstaining model: no signals at all, while the threshold-free
    figures (ROC-AUC, PR-AUC, Brier) still describe its probabilities.

    Keys: accuracy, precision, recall, f1, roc_auc, roc_auc_ci95 [lo, hi] (DeLong, at
    ``confidence``), pr_auc, brier, n_signals, n_positives, n_samples, true_positives,
    base_rate, lift (precision / base rate), precision_ci95 [lo, hi] (Wilson, at
    ``confidence``; [0, 1] with no signals).
    """
    y, p = _check_inputs(y_true, prob, "classification_metrics")
    pred = np.zeros(p.size, np.int8) if threshold is None else (p >= threshold).astype(np.int8)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    n_signals, n_pos = tp + fp, tp + fn
    base_rate = n_pos / y.size
    precision = _ratio(tp, n_signals)
    recall = _ratio(tp, n_pos)
    two_class = 0 < n_pos < y.size
    lo, hi = wilson_interval(tp, n_signals, confidence)
    auc_ci = roc_auc_interval(y, p, confidence)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(roc_auc_score(y, p)) if two_class else None,
        "roc_auc_ci95": None if auc_ci is None else list(auc_ci),
        "pr_auc": float(average_precision_score(y, p)) if n_pos > 0 else None,
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "n_signals": n_signals,
        "n_positives": n_pos,
        "n_samples": int(y.size),
        "true_positives": tp,
        "base_rate": float(base_rate),
        "lift": precision / base_rate if precision is not None and base_rate > 0 else None,
        "precision_ci95": [lo, hi],
    }


#: ``ThresholdChoice.rule`` when a val threshold met the Wilson rule.
RULE_WILSON = "wilson_lower_bound"
#: ``ThresholdChoice.rule`` when none did: the model gives no signals.
RULE_ABSTAIN = "abstain"


@dataclass(frozen=True)
class OperatingPoint:
    """One val threshold and what it gives on val (the diagnostic point of an abstaining model)."""

    threshold: float
    val_precision: float
    val_precision_lower: float  # Wilson lower bound at EvalConfig.confidence
    val_f1: float
    n_signals: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision threshold fixed on val, or ``None`` when the model abstains.

    ``explanation`` is the sentence for the report. ``diagnostic`` is the max-F1 val point of
    an abstaining model: reported, never used for a signal, the backtest or promotion.
    """

    threshold: float | None
    explanation: str
    val_precision: float | None
    val_precision_lower: float | None  # Wilson lower bound at EvalConfig.confidence
    n_signals: int  # val signals at ``threshold`` (0 when abstaining)
    diagnostic: OperatingPoint | None = None

    def __post_init__(self) -> None:
        if self.threshold is None and (self.n_signals or self.val_precision is not None):
            raise ValueError("ThresholdChoice: an abstaining choice has no signals and no val precision")
        if self.threshold is not None and self.diagnostic is not None:
            raise ValueError("ThresholdChoice: a diagnostic point belongs only to an abstaining choice")

    @property
    def abstains(self) -> bool:
        return self.threshold is None

    @property
    def reachable(self) -> bool:
        """The target was reachable on val (the model signals at ``threshold``)."""
        return self.threshold is not None

    @property
    def rule(self) -> str:
        return RULE_ABSTAIN if self.abstains else RULE_WILSON

    def to_dict(self) -> dict[str, Any]:
        """The ``threshold`` block of evaluation.json: the same keys whether or not it abstains."""
        return {"value": self.threshold, "rule": self.rule, "reachable": self.reachable,
                "explanation": self.explanation, "val_precision": self.val_precision,
                "val_precision_lower": self.val_precision_lower, "n_signals": self.n_signals,
                "diagnostic": None if self.diagnostic is None else self.diagnostic.to_dict()}


def select_threshold(y_val: np.ndarray, p_val: np.ndarray, config: EvalConfig) -> ThresholdChoice:
    """Lowest val threshold whose Wilson lower bound of precision is >= the target, else abstain.

    Candidates are the distinct val probabilities (signal = ``prob >= threshold``), so every
    achievable signal set is tried once. Among thresholds with at least ``min_signals``
    signals and ``lower bound >= target_precision``, the lowest wins: it keeps the most
    signals while still clearing the target with a margin. If none does, the model abstains
    (``threshold=None``) and the F1-maximizing threshold (ties: the higher one) is kept as
    ``diagnostic``. Only val is taken, so test cannot influence the choice.
    """
    y, p = _check_inputs(y_val, p_val, "select_threshold")
    order = np.argsort(-p, kind="stable")
    p_desc, y_desc = p[order], y[order]
    tp_cum = np.cumsum(y_desc, dtype=np.int64)
    # The last index of each tie group: signals at threshold t are all rows with p >= t.
    last = np.flatnonzero(np.r_[p_desc[1:] != p_desc[:-1], True])
    thresholds = p_desc[last]  # descending
    n_sig = last + 1
    tp = tp_cum[last]
    lower, _ = _wilson_arrays(tp, n_sig, _z(config.confidence))
    ok = (n_sig >= config.min_signals) & (lower >= config.target_precision)
    target, conf_pct = config.target_precision, round(config.confidence * 100)
    if ok.any():
        i = int(np.flatnonzero(ok)[-1])  # lowest threshold = last in descending order
        return ThresholdChoice(
            threshold=float(thresholds[i]),
            explanation=(f"lowest val threshold whose {conf_pct}% Wilson lower bound of precision "
                         f"({lower[i]:.3f}) >= target {target:g} with >= {config.min_signals} signals"),
            val_precision=float(tp[i] / n_sig[i]),
            val_precision_lower=float(lower[i]),
            n_signals=int(n_sig[i]),
        )
    f1 = 2.0 * tp / (n_sig + tp_cum[-1])
    i = int(np.argmax(f1))
    explanation = (f"no val threshold had a {conf_pct}% Wilson lower bound of precision >= {target:g} "
                   f"with >= {config.min_signals} signals")
    log.warning("select_threshold: %s; the model abstains", explanation)
    return ThresholdChoice(
        threshold=None, explanation=explanation, val_precision=None, val_precision_lower=None, n_signals=0,
        diagnostic=OperatingPoint(threshold=float(thresholds[i]), val_precision=float(tp[i] / n_sig[i]),
                                  val_precision_lower=float(lower[i]), val_f1=float(f1[i]),
                                  n_signals=int(n_sig[i])),
    )
