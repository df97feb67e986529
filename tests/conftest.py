"""Shared fixtures (small generated candle frames, never downloaded) and how pytest-xdist
spreads the tests over its workers."""

from __future__ import annotations

import os
from collections import defaultdict

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


def _shared_fixture_group(item: pytest.Item) -> str | None:
    """The package folder or module file whose package- or module-scoped fixture ``item`` uses (the
    package when both), or None. Each xdist worker sets such a fixture up again for itself (a `dagster dev`,
    a Redis and its Celery workers, a trained model), so the tests sharing one go to one worker."""
    info = getattr(item, "_fixtureinfo", None)  # a test function's; other items have no fixtures
    if info is None:
        return None
    group = None
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name)
        if not defs:
            continue
        fixturedef = defs[-1]
        if fixturedef.scope == "package":
            return fixturedef.baseid or "."
        if fixturedef.scope == "module":
            group = item.nodeid.split("::", 1)[0]
    return group


def _join_group(item: pytest.Item, group: str) -> None:
    """Put ``item`` in the xdist work unit ``group``: ``--dist loadgroup`` reads a test's group from
    an ``@<group>`` suffix of its node id. xdist's own hook writes that suffix for ``xdist_group``
    marks to ``Item._nodeid``, which pytest 9.2 no longer reads (its ids are structured, in
    ``Item._id``: pytest-xdist issue 1386), so the marks alone would silently group nothing."""
    nodeid = f"{item.nodeid}@{group}"
    if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(nodeid)
    else:
        item._nodeid = nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker (``make test``): group the tests that share a costly fixture, and put
    the units of work holding a ``slow`` test first, so that the last units handed out are short
    ones and neither worker is left running a long test alone at the end. Every worker computes
    the same order, as xdist requires; a serial run keeps the files' order."""
    if not hasattr(config, "workerinput"):
        return
    module = {id(item): item.nodeid.split("::", 1)[0] for item in items}
    groups = {id(item): _shared_fixture_group(item) for item in items}
    # A module of which one test joins a package's group joins it whole: its module-scoped
    # fixtures then live on that one worker too. (A module's group is its file, a package's its folder.)
    module_to_package = {module[id(item)]: groups[id(item)] for item in items
                         if groups[id(item)] and not groups[id(item)].endswith(".py")}
    units: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        marked = item.get_closest_marker("xdist_group")
        group = groups[id(item)]
        if marked is not None:
            group = str(marked.args[0] if marked.args else marked.kwargs.get("name", "default"))
        elif group is not None:
            group = module_to_package.get(module[id(item)], group)
        groups[id(item)] = group
        units[group or item.nodeid].append(item)
    for item in items:
        if groups[id(item)] is not None:
            _join_group(item, groups[id(item)])
    slow = {id(item) for unit in units.values() if any(i.get_closest_marker("slow") for i in unit) for item in unit}
    items.sort(key=lambda item: id(item) not in slow)  # stable: the files' order within each half
