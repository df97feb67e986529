"""The gate: threshold on val → signals → precision [CI] on the gate split → passed or abstained.

:func:`judge` is the one place that decides. The nightly evaluation (evaluation.json's
``checks.precision_gate``) and every walk-forward fold (its ``gate_passed`` / ``gate_reason``)
call it with their val and gate-split predictions, so the two cannot disagree about the same
predictions.

- The threshold is :func:`~patx_core.evaluation.threshold.select_threshold`'s, from val only.
- A signal is :func:`~patx_core.evaluation.metrics.signal_mask`'s ``prob >= threshold``; an
  abstaining choice (``threshold`` None) signals nowhere, and its diagnostic max-F1 point is
  never used.
- Passed iff the model signals and the gate split's precision > target with >= ``min_signals``
  signals (the bar is strict: exactly the target does not pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from patx_core.evaluation.formatting import estimate
from patx_core.evaluation.metrics import classification_metrics, signal_mask
from patx_core.evaluation.threshold import ThresholdChoice, select_threshold
from patx_core.settings.config import EvalConfig


@dataclass(frozen=True)
class GateVerdict:
    """What :func:`judge` decided: the val threshold, the gate split's signals and metrics, the gate block."""

    choice: ThresholdChoice
    signal: np.ndarray  # (gate-split samples,) bool: the buy decisions (all False when abstaining)
    metrics: dict[str, Any]  # classification_metrics of the gate split at the threshold
    gate: dict[str, Any]  # precision_gate's block: evaluation.json's checks.precision_gate

    @property
    def passed(self) -> bool:
        return bool(self.gate["passed"])

    @property
    def abstains(self) -> bool:
        return self.choice.abstains

    @property
    def reason(self) -> str:
        return str(self.gate["reason"])


def precision_gate(split: str, metrics: Mapping[str, Any], threshold: ThresholdChoice,
                   *, target: float, min_signals: int) -> dict[str, Any]:
    """The gate block: passed iff the model signals and precision > target AND signals >= min_signals.

    ``reason`` is the sentence a trader reads: the precision with its interval, signal count
    and base rate and what fell short; for an abstaining model it starts with "abstains".
    """
    precision, n = metrics["precision"], int(metrics["n_signals"])
    lo, hi = metrics["precision_ci95"]
    passed = not threshold.abstains and precision is not None and precision > target and n >= min_signals
    head = (f"{split} precision {estimate(precision, (lo, hi), 2)} on {n} signals "
            f"vs base rate {metrics['base_rate']:.2f}")
    if threshold.abstains:
        reason = f"abstains: {threshold.explanation}, so there are no signals on {split}"
    elif n == 0:
        reason = f"no signals on {split} at threshold {threshold.threshold:.4f} (0 < {min_signals})"
    elif n < min_signals:
        reason = f"only {n} signals < {min_signals} on {split} ({head})"
    elif passed:
        reason = f"{head} — above {target:g} with >= {min_signals} signals"
    else:
        reason = f"{head} — not above {target:g}"
    if split == "val":
        reason += " (judged on val, the split the threshold was chosen on: optimistic)"
    return {"passed": bool(passed), "split": split, "min_precision": target, "min_signals": min_signals,
            "precision": precision, "n_signals": n, "precision_ci95": [lo, hi],
            "base_rate": metrics["base_rate"], "lift": metrics["lift"],
            "threshold": threshold.threshold, "threshold_reachable": threshold.reachable,
            "reason": reason}


def judge(y_val: np.ndarray, p_val: np.ndarray, y_gate: np.ndarray, p_gate: np.ndarray, config: EvalConfig,
          *, split: str) -> GateVerdict:
    """Threshold on (``y_val``, ``p_val``), then signals, metrics and the gate on the ``split`` predictions.

    ``split`` names the gate split ("test", or "val" for a variant without one, in which case
    ``y_gate``/``p_gate`` are the val arrays again and the reason says the verdict is optimistic).
    """
    choice = select_threshold(y_val, p_val, config)
    metrics = classification_metrics(y_gate, p_gate, choice.threshold, confidence=config.confidence)
    gate = precision_gate(split, metrics, choice, target=config.target_precision, min_signals=config.min_signals)
    return GateVerdict(choice=choice, signal=signal_mask(p_gate, choice.threshold), metrics=metrics, gate=gate)
