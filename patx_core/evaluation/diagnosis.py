"""Name the way a model failed, in words a trader reads: the ``diagnosis`` list of evaluation.json.

A failed gate alone says *that* a model is not good enough; each ``Diagnosis`` says *how*, with
a stable ``code`` for tools and a one-sentence ``explanation`` for people. The checks are plain
functions of what the evaluation already computed (the threshold choice, the per-split metrics,
the probabilities and the training history), so each can be provoked by a case built by hand.

Codes, in the order they are listed (what happened first, then the likely causes):

- ``abstained``: no val threshold met the precision rule, so the model gives no signals.
- ``too_few_signals``: a threshold was chosen on val, but on the gate split it signals fewer
  than ``min_signals`` times (an abstaining model is named once, as ``abstained``).
- ``single_class_on_train``: at the best epoch the model called every train sample the same
  class at probability 0.5: it learned the base rate, not a pattern.
- ``collapsed_probabilities``: on an evaluated split the 5–95 % range of the probabilities is
  narrower than ``COLLAPSED_WIDTH``: the output barely depends on the input.
- ``no_ranking_skill``: the gate split's ROC-AUC interval includes 0.5: winners are not ranked
  above losers any better than by a coin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from patx_core.evaluation.formatting import interval
from patx_core.evaluation.threshold import ThresholdChoice

#: Probabilities whose 5–95 % range is narrower than this count as collapsed. A collapsed model
#: seen on the bundled daily NASDAQ sample put every test probability inside [0.15, 0.30]; the
#: smoke model that learns the test suite's planted pattern spreads its 5–95 % range over
#: [0.004, 0.96].
COLLAPSED_WIDTH = 0.15
#: The percentiles whose distance is compared with ``COLLAPSED_WIDTH``: a few outliers do not
#: make a collapsed model look spread.
BAND_PERCENTILES = (5.0, 95.0)


@dataclass(frozen=True)
class Diagnosis:
    """One named failure mode: ``code`` for tools, ``explanation`` (one sentence) for people."""

    code: str
    explanation: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def probability_band(prob: np.ndarray) -> tuple[float, float]:
    """The ``BAND_PERCENTILES`` of ``prob``."""
    lo, hi = np.percentile(np.asarray(prob, dtype=np.float64), BAND_PERCENTILES)
    return float(lo), float(hi)


def abstained(threshold: ThresholdChoice) -> Diagnosis | None:
    if not threshold.abstains:
        return None
    return Diagnosis("abstained", f"The model abstains: {threshold.explanation}, so it gives no signals "
                                  "(its best max-F1 point is reported under diagnostics only).")


def too_few_signals(threshold: ThresholdChoice, split: str, metrics: Mapping[str, Any],
                    min_signals: int) -> Diagnosis | None:
    n = int(metrics["n_signals"])
    if threshold.abstains or n >= min_signals:
        return None
    return Diagnosis("too_few_signals", f"The val threshold {threshold.threshold:.4f} gives only {n} signals on "
                                        f"{split} (fewer than {min_signals}), too few to judge its precision.")


def _predicted_positive_rate(accuracy: float, recall: float, base_rate: float) -> float:
    """Share of samples predicted positive, from accuracy, recall and the base rate.

    With TP = recall·P and accuracy = 1 − (predicted positives + P − 2·TP)/n, the predicted
    positive share is 1 − accuracy − b + 2·recall·b (b = P/n). Exact for any classifier.
    """
    return 1.0 - accuracy - base_rate + 2.0 * recall * base_rate


def single_class_on_train(history: Mapping[str, Any], train_base_rate: float | None,
                          train_samples: int | None) -> Diagnosis | None:
    """From the trainer's per-epoch train accuracy and recall at its best epoch.

    ``None`` (no finding) when the history lacks them or the train split's size or base rate
    is unknown: the check cannot be made, which is not the same as a finding.
    """
    accuracy, recall = history.get("train_accuracy"), history.get("train_recall")
    best = history.get("best_epoch")
    if not accuracy or not recall or best is None or train_base_rate is None or not train_samples:
        return None
    i = int(best) - 1
    if not 0 <= i < min(len(accuracy), len(recall)) or accuracy[i] is None or recall[i] is None:
        return None
    share = _predicted_positive_rate(float(accuracy[i]), float(recall[i]), float(train_base_rate))
    half_sample = 0.5 / train_samples  # the counts are whole samples; the floats carry rounding dust
    if share <= half_sample:
        what = f"gave no signal on any of the {train_samples} train samples (every probability below 0.5)"
    elif share >= 1.0 - half_sample:
        what = f"signalled on every one of the {train_samples} train samples (every probability at or above 0.5)"
    else:
        return None
    return Diagnosis("single_class_on_train",
                     f"At its best epoch ({int(best)}) the model {what}: it learned the base rate "
                     f"({train_base_rate:.2f}), not a pattern.")


def collapsed_probabilities(probabilities: Mapping[str, np.ndarray]) -> Diagnosis | None:
    """Any evaluated split whose probabilities sit in a band narrower than ``COLLAPSED_WIDTH``."""
    bands = {split: probability_band(p) for split, p in probabilities.items() if np.asarray(p).size}
    narrow = {s: b for s, b in bands.items() if b[1] - b[0] < COLLAPSED_WIDTH}
    if not narrow:
        return None
    lo_pct, hi_pct = (f"{q:g}" for q in BAND_PERCENTILES)
    where = "; ".join(f"{s} {interval(lo, hi, 2)}" for s, (lo, hi) in narrow.items())
    return Diagnosis("collapsed_probabilities",
                     f"The probabilities collapsed into a narrow band ({lo_pct}–{hi_pct} % range {where}, "
                     f"narrower than {COLLAPSED_WIDTH:g}): the output barely depends on the candles.")


def no_ranking_skill(split: str, metrics: Mapping[str, Any]) -> Diagnosis | None:
    auc, ci = metrics.get("roc_auc"), metrics.get("roc_auc_ci95")
    if auc is None or ci is None or not ci[0] <= 0.5 <= ci[1]:
        return None
    return Diagnosis("no_ranking_skill",
                     f"The {split} ROC-AUC {auc:.3f} has a 95 % DeLong interval {interval(*ci)} "
                     "that includes 0.5: the model ranks winners above losers no better than a coin.")


def diagnose(*, threshold: ThresholdChoice, metrics: Mapping[str, Mapping[str, Any]],
             probabilities: Mapping[str, np.ndarray], gate_split: str, min_signals: int,
             history: Mapping[str, Any], train_base_rate: float | None,
             train_samples: int | None) -> list[Diagnosis]:
    """Every failure mode that applies, in the module docstring's order; ``[]`` for a healthy model.

    ``metrics`` and ``probabilities`` are keyed by the evaluated splits (val, and test when the
    variant has one); ``history`` is the trainer's; ``train_base_rate``/``train_samples`` describe
    the train split's samples (the trainer's per-epoch figures are over exactly those).
    """
    found = [
        abstained(threshold),
        too_few_signals(threshold, gate_split, metrics[gate_split], min_signals),
        single_class_on_train(history, train_base_rate, train_samples),
        collapsed_probabilities(probabilities),
        no_ranking_skill(gate_split, metrics[gate_split]),
    ]
    return [d for d in found if d is not None]
