"""The selection gate: a pass that pays for every model judged on the same test window.

The literal gate (:func:`patx_core.evaluation.gate.judge`) asks one model's test precision to be
above the target. A user who tries several variants, seeds, a search or a nightly retrain and
promotes whichever passes is taking the best of N looks at one window, and the best of N
models with no edge passes far more often than one does. This gate prices that in:

- ``p_value`` = P(X >= hits) for X ~ Binomial(n_signals, target): how often a model whose
  precision is exactly the target would do at least this well on these signals;
- ``adjusted_p_value`` = min(1, n_looks × p_value): Bonferroni on the best of ``n_looks``
  (conservative whatever the looks' correlation);
- ``confidence`` = 1 − adjusted_p_value; passed iff the model signals and
  confidence >= ``min_confidence``.

With one look and ``min_confidence`` 0.5 this asks the precision to sit above the target's
binomial median: the literal "precision > target" up to the rounding of one hit. Each further
look asks for more. ``n_looks`` comes from the looks ledger (:mod:`patx_core.evaluation.looks`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import polars as pl
from scipy.special import betainc

from patx_core.evaluation.formatting import interval, num
from patx_core.settings.config import EvalConfig


def binomial_tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X ~ Binomial(n, p), exactly (the regularized incomplete beta I_p(hits, n − hits + 1))."""
    if not 0 <= hits <= n:
        raise ValueError(f"binomial_tail: hits must be in [0, n={n}], got {hits}")
    if hits == 0:
        return 1.0
    return float(betainc(hits, n - hits + 1, p))


def _looks_words(n_looks: int, split: str) -> str:
    return f"{n_looks} model{'s were' if n_looks != 1 else ' was'} judged on this {split} window"


def selection_gate(hits: int, n_signals: int, n_looks: int, *, target: float, min_confidence: float,
                   split: str = "test", precision_ci95: Sequence[float] | None = None) -> dict[str, Any]:
    """The selection block: ``passed, n_looks, p_value, adjusted_p_value, confidence,
    min_confidence, reason`` (see the module docstring for the rule).

    ``split`` and ``precision_ci95`` (the literal gate's interval) only shape the ``reason``, the
    sentence a trader reads.
    """
    if n_looks < 1:
        raise ValueError(f"selection_gate: n_looks must be >= 1 (this verdict is a look), got {n_looks}")
    if not 0 <= hits <= n_signals:
        raise ValueError(f"selection_gate: hits must be in [0, n_signals={n_signals}], got {hits}")
    p_value = binomial_tail(hits, n_signals, target)
    adjusted = min(1.0, n_looks * p_value)
    confidence = 1.0 - adjusted
    passed = n_signals > 0 and confidence >= min_confidence
    looks = _looks_words(n_looks, split)
    if n_signals == 0:
        reason = f"no signals on {split}, so nothing to judge ({looks})"
    else:
        ci = "" if precision_ci95 is None else " " + interval(precision_ci95[0], precision_ci95[1], 2)
        head = f"{split} precision {num(hits / n_signals, 2)}{ci} on {n_signals} signals"
        alone = 1.0 - p_value >= min_confidence
        if passed:
            reason = f"{head}; {looks}: confidence {confidence:.2f} >= {min_confidence:g}"
        elif alone and n_looks > 1:
            reason = f"{head} would pass alone, but {looks}: confidence {confidence:.2f} < {min_confidence:g}"
        else:
            reason = (f"{head}; {looks}: confidence {confidence:.2f} < {min_confidence:g}"
                      f"{' even for one look' if n_looks > 1 else ''} (target {target:g})")
    return {"passed": bool(passed), "n_looks": int(n_looks), "p_value": p_value, "adjusted_p_value": adjusted,
            "confidence": confidence, "min_confidence": min_confidence, "reason": reason}


def selection_block(evaluation: Mapping[str, Any], counted: pl.DataFrame, config: EvalConfig) -> dict[str, Any]:
    """``evaluation.json``'s ``checks.precision_gate_selection``: :func:`selection_gate` on the gate
    split's signals with ``n_looks`` = the distinct models in ``counted``
    (:func:`patx_core.evaluation.looks.counted_looks`, this one included), plus ``looks``: the
    other counted models (variant, checkpoint_sha256, judged_at), oldest first."""
    gate = evaluation["checks"]["precision_gate"]
    metrics = evaluation["metrics"][gate["split"]]
    checkpoint = evaluation["checkpoint_sha256"]
    if checkpoint not in set(counted["checkpoint_sha256"].to_list()):
        raise ValueError(f"selection_block: the looks counted for this verdict do not include its own model "
                         f"{checkpoint[:12]}: record the look before judging it")
    block = selection_gate(int(metrics["true_positives"]), int(metrics["n_signals"]), counted.height,
                           target=config.target_precision, min_confidence=config.min_confidence,
                           split=gate["split"], precision_ci95=gate["precision_ci95"])
    others = counted.filter(pl.col("checkpoint_sha256") != checkpoint)
    block["looks"] = [{"variant": r["variant"], "checkpoint_sha256": r["checkpoint_sha256"],
                       "judged_at": r["judged_at"].isoformat()} for r in others.iter_rows(named=True)]
    return block


def selection_summary(block: Mapping[str, Any]) -> str:
    """The selection gate in one phrase, for the report's first lines, the shell verdict and the
    leaderboard: ``selection gate FAILED: 12 looks, confidence 0.31 < 0.5``."""
    sign = ">=" if block["passed"] else "<"
    n = int(block["n_looks"])
    return (f"selection gate {'PASSED' if block['passed'] else 'FAILED'}: {n} look{'s' if n != 1 else ''}, "
            f"confidence {block['confidence']:.2f} {sign} {block['min_confidence']:g}")
