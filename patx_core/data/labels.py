"""Volatility-scaled triple-barrier labels ("would a long entered at this close have worked?").

For an entry at the close of candle t, with ``atr = atr_14[t]``:

    upper = close[t] + take_profit · atr        lower = close[t] − stop_loss · atr

Candles t+1 … t+H are scanned in order. The first candle with ``low <= lower`` exits at the stop,
the first with ``high >= upper`` at the take-profit; a candle touching both counts as the stop
(daily bars do not say which came first, so the pessimistic reading keeps precision honest).
Label 1 iff the take-profit is hit first. With neither barrier hit the trade exits at the close
of candle t+H with label 0.

Fills, for the backtest: a stop fills at ``min(lower, open)`` of the exit candle (a gap through
the stop fills at the open, worse), a take-profit at ``max(upper, open)`` (a gap through it fills
at the open, better), a horizon exit at ``close[t+H]``.

Rows whose horizon runs past the end of the data, or whose ATR is missing (warm-up), get no
label: NaN in ``label``/``exit_price``/``trade_return``, -1 in ``exit_index``, 0 in
``holding``/``exit_reason`` (check :attr:`LabelResult.labelled`). They are dropped for training
and kept for inference.

Vectorized over rows: one pass of numpy array operations per horizon offset (H passes), so a
million rows take a fraction of a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from patx_core.settings.config import LabelConfig

logger = logging.getLogger(__name__)

EXIT_TAKE_PROFIT = 1
EXIT_STOP = -1
EXIT_HORIZON = 0


@dataclass(frozen=True)
class LabelResult:
    """Per-row label and trade outcome, all arrays of the input's length."""

    label: np.ndarray  # float64: 1.0 / 0.0, NaN where unlabelled
    exit_index: np.ndarray  # int64 row of the exit candle, -1 where unlabelled
    exit_price: np.ndarray  # float64, NaN where unlabelled
    trade_return: np.ndarray  # float64 exit_price / close - 1, NaN where unlabelled
    holding: np.ndarray  # int64 candles held (exit_index - t), 0 where unlabelled
    exit_reason: np.ndarray  # int8: 1 take-profit, -1 stop, 0 horizon (and 0 where unlabelled)

    @property
    def labelled(self) -> np.ndarray:
        """Boolean mask of rows that have a label (and therefore a trade outcome)."""
        return ~np.isnan(self.label)


def triple_barrier(open: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                   atr: np.ndarray, config: LabelConfig) -> LabelResult:
    """Label every row with the triple-barrier outcome of a long entered at its close.

    Arrays are 1-D and equally long; ``atr`` is NaN where unknown (the indicator's warm-up).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close, atr)]
    lengths = {a.shape for a in arrays}
    if len(lengths) != 1 or arrays[0].ndim != 1:
        raise ValueError(f"triple_barrier: open/high/low/close/atr must be 1-D arrays of one length, "
                         f"got shapes {[a.shape for a in arrays]}")
    open_, high_, low_, close_, atr_ = arrays
    n = close_.shape[0]
    horizon = config.horizon

    # A row is labelled when all H future candles exist and the barriers are defined.
    active = np.isfinite(atr_) & np.isfinite(close_)
    active[max(n - horizon, 0):] = False
    labelled = active.copy()
    upper = close_ + config.take_profit * atr_
    lower = close_ - config.stop_loss * atr_

    label = np.where(labelled, 0.0, np.nan)
    exit_index = np.full(n, -1, dtype=np.int64)
    exit_price = np.full(n, np.nan)
    exit_reason = np.zeros(n, dtype=np.int8)

    rows = np.arange(n, dtype=np.int64)
    for k in range(1, horizon + 1):
        m = n - k  # entries t in [0, m) look at candle t + k
        if m <= 0:
            break
        still = active[:m]
        stop = still & (low_[k:] <= lower[:m])
        take = still & ~stop & (high_[k:] >= upper[:m])
        exit_price[:m][stop] = np.minimum(lower[:m], open_[k:])[stop]
        exit_price[:m][take] = np.maximum(upper[:m], open_[k:])[take]
        exit_reason[:m][stop] = EXIT_STOP
        exit_reason[:m][take] = EXIT_TAKE_PROFIT
        label[:m][take] = 1.0
        hit = stop | take
        exit_index[:m][hit] = rows[:m][hit] + k
        active[:m] &= ~hit

    # Neither barrier within H candles: out at the close of t + H (reason stays 0 = horizon).
    timeout = np.flatnonzero(active)
    exit_index[timeout] = timeout + horizon
    exit_price[timeout] = close_[timeout + horizon]

    holding = np.where(labelled, exit_index - rows, 0)
    trade_return = exit_price / close_ - 1.0
    n_labelled = int(labelled.sum())
    if n_labelled:
        logger.debug("triple_barrier: %d labelled rows, %.1f%% positive, %d stops, %d horizon exits",
                     n_labelled, 100.0 * np.nanmean(label), int((exit_reason == EXIT_STOP).sum()),
                     timeout.size)
    return LabelResult(label=label, exit_index=exit_index, exit_price=exit_price, trade_return=trade_return,
                       holding=holding, exit_reason=exit_reason)


def known_outcomes(open: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                   atr: np.ndarray, config: LabelConfig) -> LabelResult:
    """:func:`triple_barrier` for the rows whose outcome these candles already decide.

    A live signal is decided before its ``horizon`` candles have all arrived when a barrier is
    touched early, so the rule is the training one applied to the candles so far followed by
    ``horizon`` placeholder candles that touch no barrier (high -inf, low +inf, no close): a row
    is labelled exactly when a real candle hit a barrier or its horizon ended inside the data,
    and then with the label the full history gives it (nothing after the exit is ever read).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close, atr)]
    n, horizon = arrays[0].shape[0], config.horizon
    pad = np.full(horizon, np.nan)
    padded = [np.concatenate([a, fill]) for a, fill in
              zip(arrays, (pad, np.full(horizon, -np.inf), np.full(horizon, np.inf), pad, pad))]
    full = triple_barrier(*padded, config)
    decided = (full.exit_index >= 0) & (full.exit_index < n)
    decided = decided[:n]
    return LabelResult(label=np.where(decided, full.label[:n], np.nan),
                       exit_index=np.where(decided, full.exit_index[:n], -1),
                       exit_price=np.where(decided, full.exit_price[:n], np.nan),
                       trade_return=np.where(decided, full.trade_return[:n], np.nan),
                       holding=np.where(decided, full.holding[:n], 0),
                       exit_reason=np.where(decided, full.exit_reason[:n], 0).astype(np.int8))
