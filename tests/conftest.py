"""Shared fixtures: small generated candle frames (never downloaded)."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest
import torch

# One intra-op thread, here and in every subprocess a test starts (dagster CLI, training): the
# test models are tiny, and on 2 shared cores two threads per process thrash (measured: a smoke
# training took 53 s with 2 threads vs 9 s with 1 under load).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def make_candles(n: int, *, seed: int = 0, start_price: float = 100.0, drift: float = 0.0,
                 vol: float = 0.01, start: str = "2000-01-03") -> pl.DataFrame:
    """A geometric random walk with consistent OHLC (high >= max(open, close) etc.), daily UTC."""
    rng = np.random.default_rng(seed)
    rets = drift + vol * rng.standard_normal(n)
    close = start_price * np.exp(np.cumsum(rets))
    open_ = np.concatenate([[start_price], close[:-1]]) * np.exp(0.002 * rng.standard_normal(n))
    spread = np.abs(vol * rng.standard_normal(n)) * close
    high = np.maximum(open_, close) + spread * rng.uniform(0.1, 1.0, n)
    low = np.minimum(open_, close) - spread * rng.uniform(0.1, 1.0, n)
    low = np.maximum(low, 1e-3)
    volume = rng.uniform(1e5, 1e6, n)
    ts = pl.datetime_range(pl.datetime(2000, 1, 3), pl.datetime(2000, 1, 3) + pl.duration(days=n - 1),
                           interval="1d", time_zone="UTC", eager=True, time_unit="us")
    return pl.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low,
                         "close": close, "volume": volume})


@pytest.fixture
def candles() -> pl.DataFrame:
    return make_candles(1500, seed=1)
