"""TA-Lib's indicators in one numba-compiled pass over the candles.

Why a compiled loop: EMA, Wilder's RSI and ATR are first-order recursions (``y[t]`` needs
``y[t-1]``), which no vectorized array operation expresses. polars' ``ewm_mean`` runs one in
~10 ms per million values (~4× TA-Lib's whole EMA) and five of them made the indicators 4× slower
than TA-Lib. One fused loop is also faster than one loop per indicator: a recursion is bound by
the latency of its own chain of float operations, so the five independent chains (EMA 50,
EMA 200, average gain, average loss, ATR) and the Bollinger sums overlap in the CPU's pipeline
instead of each waiting alone. ``cache=True`` keeps the machine code on disk, so only the first
process on a machine pays the compile (~2 s).

Each recursion has TA-Lib's seeds and update formulas in TA-Lib's order, so values agree with
TA-Lib to ~1e-15 (``tests/core/data/test_features.py`` holds them to 1e-8). Deliberate differences:

- a division by a constant period is a multiplication by its reciprocal: division is the slowest
  operation in the loop, and the difference (one unit in the last place per step) is damped by
  the recursions rather than grown;
- RSI is 0 when both averages are exactly 0 (TA-Lib: when their sum is below 1e-8), and a
  Bollinger variance is clipped at 0 (TA-Lib zeroes variances below 1e-8, which would flatten the
  bands of anything priced under ~0.01): absolute thresholds do not fit every price scale.
  Instead a window of ``bb_period`` identical closes has exactly zero width, middle = the close;
- the rolling window sums are re-added from scratch every :data:`RESUM_EVERY` rows, so
  add/subtract rounding cannot drift over a million candles (TA-Lib's running sums never reset).

Every value at row ``t`` depends on rows ``<= t`` only, and a row's value does not depend on how
many rows follow it (the re-sum points are fixed row numbers), so a prefix of a series gives
bit-identical values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

log = logging.getLogger(__name__)

# Re-sum a rolling window exactly this often: bounds the add/subtract drift to ~1,000 steps.
RESUM_EVERY = 1024

# Rows of the matrix :func:`indicator_matrix` returns.
INDICATOR_ROWS: tuple[str, ...] = ("rsi", "atr", "ema_fast", "ema_slow", "bb_middle", "bb_upper", "bb_lower",
                                   "bb_width", "bb_percent")


def indicator_matrix(high: np.ndarray, low: np.ndarray, close: np.ndarray, *, rsi_period: int,
                     atr_period: int, ema_periods: tuple[int, int], bb_period: int, bb_stds: float) -> np.ndarray:
    """``(len(INDICATOR_ROWS), n)`` float64: one row per indicator, NaN inside its TA-Lib warm-up.

    First values (TA-Lib's lookbacks): RSI row ``rsi_period``, ATR row ``atr_period``, each EMA row
    ``period - 1``, the Bollinger rows ``bb_period - 1``. ``bb_width = (upper - lower) / middle``;
    ``bb_percent = (close - lower) / (upper - lower)``, and 0.5 (the middle) for a zero-width band.
    """
    periods = {"rsi_period": rsi_period, "atr_period": atr_period, "ema_periods[0]": ema_periods[0],
               "ema_periods[1]": ema_periods[1], "bb_period": bb_period}
    for name, value in periods.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"indicator_matrix: {name} must be an integer >= 1, got {value!r}")
    arrays = {name: np.ascontiguousarray(v, dtype=np.float64) for name, v in (("high", high), ("low", low),
                                                                              ("close", close))}
    n = arrays["close"].shape[0] if arrays["close"].ndim == 1 else -1
    for name, array in arrays.items():
        if array.ndim != 1 or array.shape[0] != n:
            raise ValueError(f"indicator_matrix: high, low and close must be 1-D and of one length; "
                             f"{name} has shape {array.shape}, close {arrays['close'].shape}")
        # Read-only views (no copy) whatever came in: polars hands out read-only arrays and numba
        # compiles one version per writability, so one type means one compile on a new machine.
        arrays[name] = array.view()  # a view: the caller's array keeps its own flag
        arrays[name].flags.writeable = False
    columns = list(arrays.values())
    out = np.empty((len(INDICATOR_ROWS), columns[2].shape[0]))  # every cell is written once below
    _fill(columns[0], columns[1], columns[2], int(rsi_period), int(atr_period), int(ema_periods[0]),
          int(ema_periods[1]), int(bb_period), float(bb_stds), out)
    return out


def _compiled(*, inline: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``njit`` with the machine code cached on disk; where numba finds no writable cache
    directory (a read-only image without a writable home) it refuses ``cache=True`` at import, so
    compile in memory instead, once per process. ``inline``: a helper merged into its caller."""
    options: dict[str, Any] = {"nogil": True, "inline": "always" if inline else "never"}

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError as exc:
            log.warning("numba cannot cache %s (%s): it compiles once per process (~2 s); set NUMBA_CACHE_DIR "
                        "to a writable directory to keep the compiled code", fn.__name__, exc)
            return njit(**options)(fn)

    return decorate


@_compiled(inline=True)
def _ema_update(ema: float, x: float, i: int, period: int, k: float) -> float:
    """TA-Lib ``EMA`` at row ``i``: the running sum of the first ``period - 1`` values, the SMA
    seed at row ``period - 1``, then ``(x - ema) * k + ema``."""
    if i < period - 1:
        return ema + x
    if i == period - 1:
        return (ema + x) / period
    return (x - ema) * k + ema


@_compiled(inline=True)
def _wilder_update(avg: float, x: float, i: int, period: int, inv_period: float) -> float:
    """Wilder's average (TA-Lib ``RSI``/``ATR``) at row ``i >= 1`` of a series that starts at row 1
    (a change, a true range): the running sum of rows 1 … ``period - 1``, the SMA seed at row
    ``period``, then ``(avg * (period - 1) + x) / period``."""
    if i < period:
        return avg + x
    if i == period:
        return (avg + x) / period
    return (avg * (period - 1) + x) * inv_period


@_compiled()
def _fill(high: np.ndarray, low: np.ndarray, close: np.ndarray, rsi_period: int, atr_period: int,
          ema_fast: int, ema_slow: int, bb_period: int, bb_stds: float, out: np.ndarray) -> None:
    n = close.shape[0]
    # warm-up rows (TA-Lib's lookbacks); the loop writes every row after them
    out[0, :min(n, rsi_period)] = np.nan
    out[1, :min(n, atr_period)] = np.nan
    out[2, :min(n, ema_fast - 1)] = np.nan
    out[3, :min(n, ema_slow - 1)] = np.nan
    out[4:, :min(n, bb_period - 1)] = np.nan
    k_fast = 2.0 / (ema_fast + 1)
    k_slow = 2.0 / (ema_slow + 1)
    # reciprocals: see the module docstring
    inv_rsi = 1.0 / rsi_period
    inv_atr = 1.0 / atr_period
    inv_bb = 1.0 / bb_period
    # Running state. Before its seed row each recursion holds the plain sum of its inputs, which
    # the seed row turns into TA-Lib's SMA seed (see the two update helpers).
    fast = slow = gain = loss = tr_avg = 0.0
    total = total_sq = 0.0
    same = 0  # how many closes in a row equal this one
    for i in range(n):
        c = close[i]
        same = same + 1 if i > 0 and c == close[i - 1] else 1

        # EMA (TA-Lib EMA): k = 2 / (period + 1), seeded by the mean of the first `period` closes.
        fast = _ema_update(fast, c, i, ema_fast, k_fast)
        if i >= ema_fast - 1:
            out[2, i] = fast
        slow = _ema_update(slow, c, i, ema_slow, k_slow)
        if i >= ema_slow - 1:
            out[3, i] = slow

        if i > 0:
            prev_close = close[i - 1]
            # RSI (TA-Lib, Wilder): average gain and loss of the close-to-close changes. max(.., 0)
            # instead of TA-Lib's branch: a random walk's sign is unpredictable, and adding 0.0
            # leaves an average bit-identical.
            change = c - prev_close
            gain = _wilder_update(gain, max(change, 0.0), i, rsi_period, inv_rsi)
            loss = _wilder_update(loss, max(-change, 0.0), i, rsi_period, inv_rsi)
            if i >= rsi_period:
                both = gain + loss
                out[0, i] = 100.0 * (gain / both) if both != 0.0 else 0.0
            # ATR (TA-Lib): Wilder's average of the true range. max(h, c_prev) - min(l, c_prev) is
            # TA-Lib's max(h - l, |h - c_prev|, |l - c_prev|) with one subtraction (bit-identical:
            # the winning difference is the same float operation).
            tr_avg = _wilder_update(tr_avg, max(high[i], prev_close) - min(low[i], prev_close), i, atr_period,
                                    inv_atr)
            if i >= atr_period:
                out[1, i] = tr_avg

        # Bollinger (TA-Lib BBANDS, SMA): running window sums, population variance E[x²] − E[x]².
        if i % RESUM_EVERY == 0:
            # exact sums of the rows the running sums hold: the window ending at i - 1
            total = total_sq = 0.0
            for j in range(max(0, i - bb_period + 1), i):
                total += close[j]
                total_sq += close[j] * close[j]
        total += c
        total_sq += c * c
        if i >= bb_period - 1:
            mean = total * inv_bb
            variance = total_sq * inv_bb - mean * mean
            # A window of identical closes (a stale quote) has zero width exactly; E[x²] − E[x]²
            # leaves rounding noise there (std ~1e-7 of the price), which bb_percent would amplify.
            if same >= bb_period:
                mean = c
                variance = 0.0
            spread = bb_stds * math.sqrt(variance) if variance > 0.0 else 0.0
            upper = mean + spread
            lower = mean - spread
            width = upper - lower
            out[4, i] = mean
            out[5, i] = upper
            out[6, i] = lower
            out[7, i] = width / mean
            out[8, i] = (c - lower) / width if width > 0.0 else 0.5
            old = close[i - bb_period + 1]
            total -= old
            total_sq -= old * old
