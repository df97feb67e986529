"""Generated candle series for tests: noise, and noise with a planted, learnable buy pattern.

The planted pattern: on pattern candles the low sits 5 % under the close (a long lower wick,
optionally with a 6x volume spike) and the next three candles rally ~2 % each with shallow
lows, so the triple-barrier label at the pattern candle is 1 by construction. Three candles
later the rally is given back, so the planted moves add no drift of their own. Anything a model
can learn beyond the base rate comes from the pattern, and only from the last candle of its
window, which is exactly what a causal model is allowed to see.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _frame(open_, high, low, close, volume) -> pl.DataFrame:
    n = close.shape[0]
    ts = pl.datetime_range(pl.datetime(2001, 1, 1), pl.datetime(2001, 1, 1) + pl.duration(days=n - 1),
                           interval="1d", time_zone="UTC", eager=True, time_unit="us")
    return pl.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": volume})


def planted_candles(n: int = 3000, *, seed: int = 0, every: int = 12, trend: float = 0.0,
                    volume_signal: bool = True, noise_only: bool = False,
                    stops_at: int | None = None) -> pl.DataFrame:
    """Daily candles: a random walk (1 % daily vol) with a pattern roughly every ``every`` candles.

    ``trend`` is the total log-price drift over the series (e.g. ``np.log(20)`` for a 20x rise),
    which puts test-period price levels far outside the train range. ``noise_only`` keeps the
    same random walk without any pattern. From candle ``stops_at`` on the pattern stops working:
    the wick and the volume spike still come, but the three candles after fall ~2 % each through
    the stop (and win it back after), so the label there is 0. The draws are the same either
    way, so the candles before ``stops_at`` equal those of the series where it never stops.
    """
    rng = np.random.default_rng(seed)
    rets = 0.01 * rng.standard_normal(n) + trend / n
    patterns: list[int] = []
    if not noise_only:
        t = 250  # after the indicator warm-up
        while t < n - 12:
            patterns.append(t)
            t += every + int(rng.integers(0, every // 2 + 1))
        for p in patterns:
            sign = -1.0 if stops_at is not None and p >= stops_at else 1.0
            rets[p + 1: p + 4] = sign * (0.02 + 0.002 * rng.standard_normal(3))  # the rally (or the fall)
            rets[p + 4: p + 7] = sign * (-0.02 + 0.002 * rng.standard_normal(3))  # given back: no net drift
    close = 100.0 * np.exp(np.cumsum(rets))
    open_ = np.concatenate([[100.0], close[:-1]])
    body_hi, body_lo = np.maximum(open_, close), np.minimum(open_, close)
    high = body_hi * (1 + np.abs(0.004 * rng.standard_normal(n)))
    low = body_lo * (1 - np.abs(0.004 * rng.standard_normal(n)))
    volume = rng.uniform(1e6, 2e6, n)
    for p in patterns:
        low[p] = close[p] * 0.95
        if volume_signal:
            volume[p] *= 6.0
        if stops_at is None or p < stops_at:
            low[p + 1: p + 4] = body_lo[p + 1: p + 4] * 0.999  # the rally never tests the stop
    return _frame(open_, high, low, close, volume)


def noise_candles(n: int = 3000, *, seed: int = 0) -> pl.DataFrame:
    """The same random walk with nothing to learn: a model should not pass the gate on it."""
    return planted_candles(n, seed=seed, noise_only=True)
