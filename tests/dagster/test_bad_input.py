"""Bad input is refused at raw_prices with a clear message, and nothing a user had is touched."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pytest

from patx_core.data.contract import required_rows
from patx_core.settings.variants import get_variant
from tests.dagster.harness import (DATASET, PER_VARIANT, failure_text, materialize, materialized, snapshot,
                                   grid_for)
from tests.synthetic import planted_candles


def _set(df: pl.DataFrame, col: str, row: int, value) -> pl.DataFrame:
    values = df[col].to_list()
    values[row] = value
    return df.with_columns(pl.Series(col, values, dtype=df.schema[col]))


def _write(df: pl.DataFrame) -> Callable[[Path], None]:
    return lambda path: df.write_parquet(path)


BASE = planted_candles(3000, seed=1)
_SMOKE = get_variant("smoke")
NEEDED = required_rows(_SMOKE.data, _SMOKE.labels, _SMOKE.split)

# (case id, writer of the bad file, fragments the message must contain)
CASES: list[tuple[str, Callable[[Path], None], list[str]]] = [
    ("missing_column", _write(BASE.drop("volume")), ["volume", "missing"]),
    ("prices_as_strings", _write(BASE.with_columns(pl.col("close").cast(pl.String))), ["close", "String"]),
    ("nan_price", _write(_set(BASE, "open", 500, float("nan"))), ["open", "500"]),
    ("inf_volume", _write(_set(BASE, "volume", 700, float("inf"))), ["volume", "700"]),
    ("zero_price", _write(_set(BASE, "low", 900, 0.0)), ["low", "900", "> 0"]),
    ("negative_price", _write(_set(BASE, "close", 901, -5.0)), ["close", "901"]),
    ("high_below_low", _write(_set(BASE, "high", 1200, float(BASE["low"][1200]) * 0.9)), ["high", "1200"]),
    ("high_not_bracketing_close", _write(_set(BASE, "close", 1300, float(BASE["high"][1300]) * 1.01)),
     ["high", "1300"]),
    ("unsorted_timestamps", _write(pl.concat([BASE[:100], BASE[101:102], BASE[100:101], BASE[102:]])),
     ["timestamp", "101"]),
    ("duplicate_timestamps", _write(_set(BASE, "timestamp", 50, BASE["timestamp"][49])), ["timestamp", "50"]),
    ("null_timestamp", _write(_set(BASE, "timestamp", 60, None)), ["timestamp", "60"]),
    ("constant_volume", _write(BASE.with_columns(pl.lit(0.0).alias("volume"))), ["volume", "same value"]),
    ("too_few_rows", _write(BASE[:250]), ["250", str(NEEDED), "window_size=32"]),
    ("empty_file", _write(BASE[:0]), ["empty"]),
    ("not_parquet", lambda p: p.write_text("timestamp,open\n2020-01-01,1\n"), ["cannot read", "as parquet"]),
    ("truncated_parquet", lambda p: (BASE.write_parquet(p), p.write_bytes(p.read_bytes()[:5000])),
     ["cannot read", "as parquet"]),
]


@pytest.fixture(scope="module")
def user_data(tmp_path_factory, good_run) -> Path:
    data_dir = tmp_path_factory.mktemp("bad_input") / "data"
    shutil.copytree(good_run[0], data_dir)
    return data_dir


@pytest.mark.parametrize("case,write,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_raw_input_is_refused_at_raw_prices_and_nothing_is_touched(tmp_path, user_data, case, write,
                                                                       fragments):
    before = snapshot(user_data)
    raw = tmp_path / "raw.parquet"
    write(raw)
    result = materialize(raw, user_data)
    assert not result.success
    assert result.get_failed_step_keys() == {"raw_prices"}
    assert materialized(result) <= {"ingested_candles"}, "no asset may materialize after a refused input"
    message = failure_text(result)
    for fragment in fragments:
        assert fragment in message, f"{case}: {fragment!r} not in message:\n{message}"
    assert snapshot(user_data) == before


def test_labels_of_one_class_are_refused_at_features(tmp_path, user_data):
    # A monotone staircase: every take-profit is hit, no stop ever is -> all labels 1.
    n = 3000
    close = 100.0 * np.exp(np.arange(n) * 0.01)
    open_ = np.concatenate([[100.0], close[:-1]])
    df = BASE.with_columns(pl.Series("open", open_), pl.Series("close", close),
                           pl.Series("high", close * 1.001), pl.Series("low", open_ * 0.999))
    before = snapshot(user_data, user_artifacts_only=True)
    raw = tmp_path / "raw.parquet"
    df.write_parquet(raw)
    result = materialize(raw, user_data)
    assert result.get_failed_step_keys() == {"features"}
    message = failure_text(result)
    assert "all one class" in message and "take_profit" in message
    assert not {"features", "splits", "trained_model"} & materialized(result)
    assert snapshot(user_data, user_artifacts_only=True) == before


def test_a_window_longer_than_the_data_allows_names_the_field(tmp_path, user_data):
    variants = tmp_path / "variants.toml"
    variants.write_text('[smoke]\n[smoke.data]\nwindow_size = 4000\n')
    from patx_dagster.assets import ALL_ASSETS
    from patx_dagster.io_manager import parquet_io_manager
    from patx_dagster.partitions import partition_key
    import dagster as dg

    raw = tmp_path / "raw.parquet"
    BASE.write_parquet(raw)
    grid = grid_for(raw, user_data, variants_file=variants)
    before = snapshot(user_data)
    result = dg.materialize(ALL_ASSETS, partition_key=partition_key(DATASET, "smoke"), selection=PER_VARIANT,
                            raise_on_error=False,
                            resources={"grid": grid,
                                       "parquet_io_manager": parquet_io_manager})
    assert result.get_failed_step_keys() == {"raw_prices"}
    assert "window_size" in failure_text(result)
    assert snapshot(user_data) == before


def test_a_bad_symbol_in_a_universe_is_named_and_refuses_the_dataset(tmp_path, user_data):
    folder = tmp_path / "universe"
    folder.mkdir()
    BASE.write_parquet(folder / "good.parquet")
    _set(planted_candles(3000, seed=2), "close", 777, float("nan")).write_parquet(folder / "broken.parquet")
    before = snapshot(user_data)
    result = materialize(folder, user_data)
    assert result.get_failed_step_keys() == {"raw_prices"}
    message = failure_text(result)
    assert "symbol 'broken'" in message and "close" in message and "row 777" in message
    assert "symbol 'good'" not in message
    assert snapshot(user_data) == before
