"""Classification metrics with honest uncertainty, and the decision threshold chosen on val.

A precision figure alone misleads: 0.8 over 5 signals is luck. Every precision here travels
with its signal count and a Wilson interval, and the threshold rule asks for the Wilson
*lower* bound to reach the target (issue 9), so a threshold that only grazes 0.70 on val
is not mistaken for one that will hold on test.

Undefined values are ``None`` (JSON ``null``), never NaN:

- ``precision`` and ``lift``: ``None`` with zero signals (nothing was predicted);
- ``recall``: ``None`` when the split has no positives;
- ``f1``: ``None`` only when there are neither signals nor positives (0/0); with positives
  but no signals it is 0.0;
- ``roc_auc``: ``None`` when ``y`` holds a single class; ``pr_auc``: ``None`` without positives;
- ``lift``: also ``None`` when the base rate is 0.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
)

from patx_core.config import EvalConfig

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


def classification_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float, *,
                           confidence: float = 0.95) -> dict[str, Any]:
    """Metrics of ``prob >= threshold`` as the buy signal, JSON-safe (see module docstring).

    Keys: accuracy, precision, recall, f1, roc_auc, pr_auc, brier, n_signals, n_positives,
    n_samples, true_positives, base_rate, lift (precision / base rate), precision_ci95 [lo, hi]
    (Wilson, at ``confidence``; [0, 1] with no signals).
    """
    y, p = _check_inputs(y_true, prob, "classification_metrics")
    pred = (p >= threshold).astype(np.int8)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    n_signals, n_pos = tp + fp, tp + fn
    base_rate = n_pos / y.size
    precision = _ratio(tp, n_signals)
    recall = _ratio(tp, n_pos)
    two_class = 0 < n_pos < y.size
    lo, hi = wilson_interval(tp, n_signals, confidence)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(roc_auc_score(y, p)) if two_class else None,
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


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision threshold fixed on val, and why (``rule`` is a sentence for the report)."""

    threshold: float
    reachable: bool  # False: no val threshold met the target; the F1 fallback was used
    rule: str
    val_precision: float
    val_precision_lower: float  # Wilson lower bound at EvalConfig.confidence
    n_signals: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_threshold(y_val: np.ndarray, p_val: np.ndarray, config: EvalConfig) -> ThresholdChoice:
    """Lowest val threshold whose Wilson lower bound of precision is >= the target.

    Candidates are the distinct val probabilities (signal = ``prob >= threshold``), so every
    achievable signal set is tried once. Among thresholds with at least ``min_signals``
    signals and ``lower bound >= target_precision``, the lowest wins: it keeps the most
    signals while still clearing the target with a margin. If none does, the F1-maximizing
    threshold is returned with ``reachable=False`` (ties: the higher threshold), and the
    rule says the target was unreachable on val, so the report can explain the likely gate
    failure. Only val is taken, so test cannot influence the choice.
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
        rule = (f"lowest val threshold whose {conf_pct}% Wilson lower bound of precision "
                f"({lower[i]:.3f}) >= target {target:g} with >= {config.min_signals} signals")
        reachable = True
    else:
        n_pos = int(tp_cum[-1])
        f1 = 2.0 * tp / (n_sig + n_pos)
        i = int(np.argmax(f1))
        rule = (f"target unreachable on val: no threshold had a {conf_pct}% Wilson lower bound of "
                f"precision >= {target:g} with >= {config.min_signals} signals; fell back to the "
                f"max-F1 threshold (val F1 {f1[i]:.3f})")
        reachable = False
        log.warning("select_threshold: %s", rule)
    return ThresholdChoice(
        threshold=float(thresholds[i]),
        reachable=reachable,
        rule=rule,
        val_precision=float(tp[i] / n_sig[i]),
        val_precision_lower=float(lower[i]),
        n_signals=int(n_sig[i]),
    )

