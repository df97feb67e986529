"""The sequential test that suspends a champion whose live precision fell: a Bernoulli CUSUM.

Input: the champion's out-of-sample resolved *bets* in the order their outcomes were decided,
each a hit (label 1) or a miss. A bet (:func:`patx_core.serving.ledger.bets`) is a buy together
with the buys of the same symbol issued while it was still open: a model fires on consecutive
candles while its first trade runs, and one price move resolves the whole cluster at once, so
its buys are not independent outcomes. Fed signal by signal, ten overlapping buys resolved by
one down move add ten misses (6.0 failure units: an alarm from one bad day at a true precision
of 0.93); fed bet by bet they add one. The ARL and detection figures below are per bet, and
hold as long as bets are independent, which is what one position at a time per symbol buys.
The question, asked again after every ingest for as long as the champion serves: has its
precision fallen from the target ``p0`` (the variant's ``eval.target_precision``) to ``p1``
(default 0.5)?

Why not the gate's own rule, re-checked nightly. "Suspend when the Wilson interval of the live
precision lies below 0.7" is a fixed-n test; looked at after every signal it is a new test each
time, and under a true precision of exactly 0.7 the chance that one of many looks dips below the
bar tends to 1 (optional stopping; the law of the iterated logarithm). A sequential test is built
to be looked at after every observation, with its error rate stated per look-sequence.

CUSUM rather than an SPRT restarted after each acceptance. Page's CUSUM,
``S_n = max(0, S_{n-1} + llr_n)``, is exactly a sequence of SPRTs whose lower boundary is 0 and
that restart there. An SPRT with a lower boundary ``-a < 0`` that restarts on acceptance lets a
long good run bank up to ``a`` of credit, so a champion that served well for a year and then
broke is detected ``~a/drift`` signals later than one that broke early; raising the acceptance
boundary to 0 removes that, and the result is the CUSUM. The CUSUM is also optimal in the
sense that matters here (Lorden 1971, Moustakides 1986): among all stopping rules with the same
average run length to a false alarm ``ARL0``, it minimizes the worst-case expected delay after
the change. Its ``ARL0`` grows like ``e^h`` in the LLR limit ``h`` (Siegmund's approximation
``ARL0 ~ (e^h - h - 1) / KL(p0 || p1)``) while its delay grows like ``h / KL(p1 || p0)``: an
exponentially long false-alarm horizon for a linear price in delay, which is what "valid for
ever" can mean for a test that never stops looking (no test keeps its false-alarm probability
below alpha over an unbounded horizon and still detects; the ARL is the stated guarantee).

The chart (Reynolds & Stoumbos 1999, Bernoulli CUSUM). With ``y = 1`` for a miss, the log
likelihood ratio of "miss rate q1 = 1 - p1" against "q0 = 1 - p0" is ``c * (y - gamma)`` with
``c = log(q1 (1 - q0) / (q0 (1 - q1)))`` and ``gamma = log((1 - q0) / (1 - q1)) / c``, so the
chart ``S_n = max(0, S_{n-1} + y_n - gamma)`` in "failure units" is the LLR CUSUM divided by
``c``. ``gamma`` is rounded to tenths (0.397 → 0.4 at the defaults: a miss adds 0.6, a hit takes
off 0.4), which makes ``S`` live on a grid of tenths: the chart is then a finite Markov chain,
and its run-length distribution is computed exactly (:func:`exact_arl`,
:func:`detection_probability`) rather than approximated.

The default limit. Two promises, per bet: ``ARL0 >= 1,000`` bets at ``p0 = 0.7``, and at a true
precision of 0.35 an alarm within 40 bets in ``>= 90 %`` of streams. The smallest limit on the
grid that keeps the first is ``h = 5.0`` (``ARL0 = 1,129``); the default ``h = 5.6`` gives
``ARL0 = 1,942`` bets, a margin of ~1.9 for what de-clustering cannot remove (consecutive bets of
one symbol in one market regime are not quite independent), at a price of two bets of mean
delay: ``P(alarm within 40) = 0.966``, mean delay 21.9 bets at 0.35 (the tests check both by
simulating 2,000 streams; ``benchmarks/RESULTS.md`` records the figures for the grid of limits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from patx_core.settings.config import MonitorConfig

#: ``gamma`` and the statistic are kept on a grid of 1/SCALE failure units (exact Markov chain).
SCALE = 10
WATCHING = "watching"
SUSPENDED = "suspended"


@dataclass(frozen=True)
class CusumDesign:
    """The chart in integer grid units: a miss adds ``up``, a hit takes off ``down``, alarm at ``limit``."""

    p0: float
    p1: float
    up: int
    down: int
    limit: int

    @classmethod
    def build(cls, p0: float, config: MonitorConfig) -> "CusumDesign":
        if not 0.0 < config.p1 < p0 < 1.0:
            raise ValueError(f"the monitor needs 0 < monitor.p1 < target precision < 1, got p1={config.p1}, "
                             f"p0={p0}")
        q0, q1 = 1.0 - p0, 1.0 - config.p1
        c = math.log(q1 * (1.0 - q0) / (q0 * (1.0 - q1)))
        gamma = math.log((1.0 - q0) / (1.0 - q1)) / c
        down = min(max(round(gamma * SCALE), 1), SCALE - 1)
        return cls(p0=p0, p1=config.p1, up=SCALE - down, down=down, limit=max(round(config.threshold * SCALE), 1))

    @property
    def threshold(self) -> float:
        return self.limit / SCALE


@dataclass(frozen=True)
class MonitorResult:
    """The chart over one stream of outcomes (True = hit)."""

    decision: str  # "watching" or "suspended"
    statistic: float  # S after the last outcome (or at the alarm), failure units
    threshold: float
    n: int  # outcomes the chart read (up to and including the alarm)
    hits: int
    alarm_index: int | None  # 0-based index of the outcome that raised the alarm
    path: np.ndarray  # S after each outcome read


def run_cusum(hits: Sequence[bool] | np.ndarray, design: CusumDesign) -> MonitorResult:
    """Feed the outcomes in order; stop at the first alarm (a suspended champion is not watched on)."""
    y = np.asarray(hits, dtype=bool)
    state, path = 0, np.zeros(y.size)
    alarm = None
    for i, hit in enumerate(y):
        state = max(0, state - design.down) if hit else state + design.up
        path[i] = state / SCALE
        if state >= design.limit:
            alarm = i
            break
    read = y.size if alarm is None else alarm + 1
    return MonitorResult(decision=SUSPENDED if alarm is not None else WATCHING, statistic=state / SCALE,
                         threshold=design.threshold, n=read, hits=int(y[:read].sum()), alarm_index=alarm,
                         path=path[:read])


def alarm_run(result: MonitorResult) -> tuple[int, int] | None:
    """The run of outcomes that raised the alarm: ``(first, misses)``, the index of the outcome after
    the chart last stood at 0 (where the CUSUM places the change) and the misses from it to the alarm
    inclusive; None without an alarm. A suspension names this run before the whole record, whose
    precision may still look fine: the alarm is about the recent stretch, not the average."""
    if result.alarm_index is None:
        return None
    path = result.path[:result.alarm_index + 1]
    zeros = np.flatnonzero(path[:-1] == 0)
    first = int(zeros[-1]) + 1 if zeros.size else 0
    # a miss is the only step that raises the statistic
    before = np.concatenate([[0.0], path[:-1]])
    return first, int((path[first:] > before[first:]).sum())


def _transitions(design: CusumDesign, p: float) -> np.ndarray:
    """Sub-stochastic transition matrix among the non-alarm states 0 … limit-1 at hit rate ``p``."""
    h = design.limit
    q = np.zeros((h, h))
    for s in range(h):
        if s + design.up < h:
            q[s, s + design.up] += 1.0 - p
        q[s, max(0, s - design.down)] += p
    return q


def exact_arl(design: CusumDesign, p: float) -> float:
    """Average run length from S = 0 to an alarm at hit rate ``p``: ``(I - Q)^-1 1`` at state 0."""
    q = _transitions(design, p)
    return float(np.linalg.solve(np.eye(q.shape[0]) - q, np.ones(q.shape[0]))[0])


def detection_probability(design: CusumDesign, p: float, within: int) -> float:
    """P(alarm within ``within`` outcomes) from S = 0 at hit rate ``p``, from the chain."""
    q = _transitions(design, p)
    v = np.zeros(q.shape[0])
    v[0] = 1.0
    for _ in range(within):
        v = v @ q
    return float(1.0 - v.sum())


def simulate_run_lengths(design: CusumDesign, p: float, *, streams: int, max_length: int,
                         seed: int) -> np.ndarray:
    """Run lengths of ``streams`` independent Bernoulli(``p``) streams, all stepped at once (numpy).

    A stream without an alarm by ``max_length`` is censored: its entry is 0.
    """
    rng = np.random.default_rng(seed)
    state = np.zeros(streams, dtype=np.int64)
    length = np.zeros(streams, dtype=np.int64)
    alive = np.ones(streams, dtype=bool)
    chunk = 1024
    for start in range(0, max_length, chunk):
        steps = min(chunk, max_length - start)
        hits = rng.random((steps, streams)) < p
        for k in range(steps):
            state = np.where(hits[k], np.maximum(state - design.down, 0), state + design.up)
            fired = alive & (state >= design.limit)
            length[fired] = start + k + 1
            alive &= ~fired
            state[~alive] = 0
        if not alive.any():
            break
    return length


def censored_mean(run_lengths: np.ndarray, max_length: int) -> float:
    """The mean run length from possibly censored runs (0 = no alarm by ``max_length``).

    The run length of a CUSUM started at 0 is close to geometric, so the maximum-likelihood
    estimate is the time observed divided by the alarms seen; with no censored run it is the
    plain mean.
    """
    alarms = int((run_lengths > 0).sum())
    observed = int(run_lengths.sum()) + max_length * int((run_lengths == 0).sum())
    return math.inf if alarms == 0 else observed / alarms
