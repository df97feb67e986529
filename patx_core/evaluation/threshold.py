"""The decision threshold, fixed on val only, or the decision to abstain.

The rule asks for the Wilson *lower* bound of val precision to reach the target, so a threshold
that only grazes 0.70 on val is not mistaken for one that will hold on test.

When no val threshold meets the rule, the model *abstains*: ``threshold`` is ``None`` and it
gives no signal anywhere. The best operating point it had (max F1 on val) is kept beside the
choice as a diagnostic, so a reader sees how far off it was, but nothing trades on it: trading
the max-F1 point of a model without skill is an always-long strategy in disguise.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from patx_core.evaluation.metrics import check_predictions, wilson_bounds
from patx_core.settings.config import EvalConfig

log = logging.getLogger(__name__)


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
    y, p = check_predictions(y_val, p_val, "select_threshold")
    order = np.argsort(-p, kind="stable")
    p_desc, y_desc = p[order], y[order]
    tp_cum = np.cumsum(y_desc, dtype=np.int64)
    # The last index of each tie group: signals at threshold t are all rows with p >= t.
    last = np.flatnonzero(np.r_[p_desc[1:] != p_desc[:-1], True])
    thresholds = p_desc[last]  # descending
    n_sig = last + 1
    tp = tp_cum[last]
    lower, _ = wilson_bounds(tp, n_sig, config.confidence)
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
