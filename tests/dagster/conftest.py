"""One good `smoke` run on planted-pattern data, shared by the graph tests (it takes ~10 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dagster.harness import materialize, write_raw
from tests.synthetic import noise_candles, planted_candles


@pytest.fixture(scope="session")
def planted_raw(tmp_path_factory) -> Path:
    return write_raw(planted_candles(3000, seed=1), tmp_path_factory.mktemp("raw") / "planted.parquet")


@pytest.fixture(scope="session")
def noise_raw(tmp_path_factory) -> Path:
    return write_raw(noise_candles(3000, seed=1), tmp_path_factory.mktemp("raw") / "noise.parquet")


@pytest.fixture(scope="session")
def good_run(tmp_path_factory, planted_raw):
    """(data_dir, result) of a full smoke run whose gate passes."""
    data_dir = tmp_path_factory.mktemp("good_run")
    result = materialize(planted_raw, data_dir)
    assert result.success, "the planted-pattern smoke run must pass end to end"
    return data_dir, result
