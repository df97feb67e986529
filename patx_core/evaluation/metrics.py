"""Classification metrics with honest uncertainty: every precision with its Wilson interval.

A precision figure alone misleads: 0.8 over 5 signals is luck. Every precision here travels
with its signal count and a Wilson interval (the val threshold rule of
:mod:`patx_core.evaluation.threshold` asks for its *lower* bound to reach the target). ROC-AUC
travels with its DeLong interval, so an AUC of 0.52 on a few hundred samples reads as "no
ranking skill", not as a small edge. ``threshold=None`` is an abstaining model: no signals.

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

import math
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


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_bounds(successes: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized Wilson score bounds, element by element; n == 0 gives the uninformative [0, 1]."""
    z = _z(confidence)
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
    lo, hi = wilson_bounds(np.array([successes]), np.array([n]), confidence)
    return float(lo[0]), float(hi[0])


def check_predictions(y_true: np.ndarray, prob: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels (int8) and probabilities in [0, 1] (float64), flat and of one length, or a ValueError."""
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
    y, p = check_predictions(y_true, prob, "roc_auc_interval")
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


def signal_mask(prob: np.ndarray, threshold: float | None) -> np.ndarray:
    """The buy decisions ``prob >= threshold``; none at all for an abstaining model (``None``)."""
    prob = np.asarray(prob, dtype=np.float64)
    return np.zeros(prob.shape, dtype=bool) if threshold is None else prob >= threshold


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
    y, p = check_predictions(y_true, prob, "classification_metrics")
    pred = signal_mask(p, threshold).astype(np.int8)
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
