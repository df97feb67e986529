"""The `gpu` pool across concurrent runs: the shipped instance config trains one variant at a time.

Two variants' whole graphs start at once as separate `dagster asset materialize` processes against
one fresh instance with the project's `instance.yaml` as shipped (no `concurrency set`), through
the same code as `python -m benchmarks pools --limits shipped`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench import _intervals_overlap, bench_pools


def test_interval_overlap_counts_the_most_open_at_once() -> None:
    assert _intervals_overlap([]) == 0
    assert _intervals_overlap([(0, 5), (5, 9)]) == 1  # one ends as the next starts
    assert _intervals_overlap([(0, 5), (4, 9), (1, 2)]) == 2
    assert _intervals_overlap([(0, 5), (1, 6), (2, 3)]) == 3
    assert _intervals_overlap([(0, 5), (6, 9), (7, 8)]) == 2


@pytest.mark.slow
def test_shipped_pool_limit_serializes_training_across_concurrent_runs(planted_raw: Path) -> None:
    result = bench_pools(variants=["smoke", "relative_smoke"], limits=[None], raw=str(planted_raw))
    runs = result["limits"]["shipped"]["runs"]
    assert all(r["exit_code"] == 0 for r in runs.values()), runs  # planted pattern: both gates pass
    # instance.yaml's pools.default_limit 1: exactly one run waited for the other's training step
    assert sorted(r["blocked_by_pool"] for r in runs.values()) == [False, True], runs
    first, second = sorted((r["step_window"] for r in runs.values()), key=lambda w: w[0])
    assert second[0] >= first[1], runs  # the second training started after the first finished
    assert result["limits"]["shipped"]["max_concurrent_steps"] == 1
