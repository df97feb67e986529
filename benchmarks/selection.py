"""``python -m benchmarks selection``: how often a campaign of N models with no edge promotes one.

A campaign is N models whose true precision is exactly ``q`` at every threshold (labels drawn
independently of the probabilities, val and test of ``--samples`` each), each judged by the
project's own :func:`~patx_core.evaluation.gate.judge` (threshold on val, precision gate on test)
and by ``judge`` + :func:`~patx_core.evaluation.selection.selection_gate` with ``n_looks = N``.
A campaign promotes when any of its N models passes. One JSON line per (q, N): the false-promotion
rate with the literal gate alone and with both, each with its binomial standard error.

The power side: each campaign also holds one real model (true precision ``--real-precision``),
and its line gives the share of campaigns where that model passes both gates at ``n_looks = N``.

The campaigns of the smaller N are the first N models of the largest campaign (nested), so every
model is judged once; the rates of different N come from the same draws. Models are judged in
``--workers`` processes (each model's draws come from its own seed, so the result does not depend
on the worker count).
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import numpy as np

from patx_core.evaluation.gate import judge
from patx_core.evaluation.selection import selection_gate
from patx_core.settings.config import EvalConfig

REAL_PRECISION = 0.85
SAMPLES = 750


def _judge_models(args: tuple[float, int, int, int, int]) -> np.ndarray:
    """(literal passed, hits, n_signals) of ``count`` models from seed ``first`` on: one row each."""
    q, first, count, samples, base_seed = args
    logging.disable(logging.WARNING)  # an abstaining model logs why; 10^5 of them would flood stderr
    config = EvalConfig()
    out = np.zeros((count, 3), dtype=np.int64)
    for i in range(count):
        rng = np.random.default_rng([base_seed, int(q * 1000), first + i])
        p_val, p_test = rng.random(samples), rng.random(samples)
        y_val = (rng.random(samples) < q).astype(np.int8)
        y_test = (rng.random(samples) < q).astype(np.int8)
        verdict = judge(y_val, p_val, y_test, p_test, config, split="test")
        m = verdict.metrics
        out[i] = (verdict.passed, int(m["true_positives"]), int(m["n_signals"]))
    return out


def _judged(q: float, n_models: int, samples: int, seed: int, workers: int) -> np.ndarray:
    chunk = max(1, math.ceil(n_models / (workers * 8)))
    jobs = [(q, start, min(chunk, n_models - start), samples, seed) for start in range(0, n_models, chunk)]
    if workers <= 1:
        return np.concatenate([_judge_models(j) for j in jobs])
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return np.concatenate(list(pool.map(_judge_models, jobs)))


def _passes_both(judged: np.ndarray, n_looks: int, config: EvalConfig) -> np.ndarray:
    return np.array([bool(lit) and selection_gate(int(h), int(n), n_looks, target=config.target_precision,
                                                  min_confidence=config.min_confidence)["passed"]
                     for lit, h, n in judged])


def _rate(hits: int, total: int) -> dict[str, float]:
    p = hits / total
    return {"rate": p, "stderr": math.sqrt(p * (1 - p) / total)}


def bench_selection(*, campaigns: int, looks: Sequence[int], precisions: Sequence[float], seed: int,
                    samples: int = SAMPLES, real_precision: float = REAL_PRECISION,
                    workers: int | None = None) -> list[dict[str, Any]]:
    """One result row per (true precision, N); see the module docstring."""
    config = EvalConfig()
    workers = workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    biggest = max(looks)
    real = _judged(real_precision, campaigns, samples, seed + 1, workers)
    rows = []
    for q in precisions:
        judged = _judged(q, campaigns * biggest, samples, seed, workers).reshape(campaigns, biggest, 3)
        for n in sorted(looks):
            models = judged[:, :n].reshape(-1, 3)
            literal = models[:, 0].reshape(campaigns, n).any(axis=1)
            both = _passes_both(models, n, config).reshape(campaigns, n).any(axis=1)
            rows.append({"command": "selection", "true_precision": q, "n_looks": n, "campaigns": campaigns,
                         "samples": samples, "target": config.target_precision,
                         "min_confidence": config.min_confidence,
                         "literal_gate": _rate(int(literal.sum()), campaigns),
                         "with_selection_gate": _rate(int(both.sum()), campaigns),
                         "real_model_precision": real_precision,
                         "real_model_passes": _rate(int(_passes_both(real, n, config).sum()), campaigns),
                         "seed": seed})
    return rows
