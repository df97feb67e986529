"""Data without volume (FX quotes, index exports): refused by default, taken by a dataset that
declares ``volume = false``, whose volume input becomes the candle's range."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from patx_core import pipeline
from patx_core.data.contract import RawDataError
from patx_core.data.universe import read_universe
from patx_core.ingest.landing import ingest_dataset
from patx_core.serving.ledger import CHAMPION, read_ledger
from patx_core.settings.datasets import DatasetConfig, load_datasets
from patx_core.settings.variants import get_variant
from tests.cells import make_cell
from tests.synthetic import planted_candles


def _hourly(n: int, *, seed: int = 2) -> pl.DataFrame:
    """The planted series on an hourly clock, as an FX feed gives it: no volume column."""
    frame = planted_candles(n, seed=seed)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    ts = pl.datetime_range(start, start + (n - 1) * (datetime(2024, 1, 1, 1) - datetime(2024, 1, 1)), interval="1h",
                           time_zone="UTC", eager=True, time_unit="us")
    return frame.with_columns(ts.alias("timestamp")).drop("volume")


def test_without_volume_a_file_is_refused_unless_its_dataset_declares_volume_false(tmp_path: Path):
    frame = _hourly(400)
    missing = tmp_path / "eurusd.parquet"
    frame.write_parquet(missing)
    zeros = tmp_path / "zeros" / "eurusd.parquet"
    zeros.parent.mkdir()
    frame.with_columns(pl.lit(0.0).alias("volume")).write_parquet(zeros)
    with pytest.raises(RawDataError, match="column 'volume' is missing"):
        read_universe([missing])
    with pytest.raises(RawDataError, match="volume = false"):
        read_universe([zeros])
    for path in (missing, zeros):
        got = read_universe([path], volume=False).frame
        expected = (frame["high"] - frame["low"]).to_numpy()
        np.testing.assert_allclose(got["volume"].to_numpy(), expected, rtol=0, atol=1e-12)
    # a real volume column is kept as it is where the dataset has volume
    with_volume = planted_candles(400, seed=2)
    with_volume.write_parquet(tmp_path / "real.parquet")
    assert read_universe([tmp_path / "real.parquet"]).frame["volume"].equals(with_volume["volume"])


def test_the_datasets_file_takes_volume_false_and_refuses_a_non_boolean(tmp_path: Path):
    path = tmp_path / "datasets.toml"
    path.write_text('[fx]\nsource = "fx.parquet"\ninterval = "1h"\nvolume = false\n')
    assert load_datasets(path)["fx"].volume is False
    assert DatasetConfig(name="d", source="x.parquet").volume is True
    with pytest.raises(ValueError, match="volume must be true or false"):
        DatasetConfig(name="d", source="x.parquet", volume="no")  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_volume_less_hourly_fx_file_runs_through_materialize_and_score(tmp_path: Path):
    history, batch = 1500, 48
    series = _hourly(history + batch)
    smoke = get_variant("smoke")
    variant = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, max_epochs=3))
    landing = tmp_path / "landing" / "eurusd"
    landing.mkdir(parents=True)
    cell = make_cell(tmp_path, series[:history], variant, name="eurusd", interval="1h", volume=False,
                     landing=str(landing))
    # materialize: the graph from raw prices to the champion decision
    raw = pipeline.load_raw_prices(cell, now=datetime(2024, 3, 10, tzinfo=timezone.utc)).value
    np.testing.assert_allclose(raw["volume"].to_numpy(), (raw["high"] - raw["low"]).to_numpy(), atol=1e-12)
    features = pipeline.build_features(raw, cell).value
    splits = pipeline.build_splits(features, cell).value
    pipeline.build_windows(splits, cell)
    pipeline.train_model(cell)
    pipeline.evaluate_model(features, splits, cell)
    pipeline.promote_champion(cell)
    # score: a batch of new hourly candles, still without volume, lands and is scored
    series[history:].write_parquet(landing / "000.parquet")
    report = ingest_dataset(cell.dataset, cell.dataset_paths.data_root)
    assert report.ok, report.metadata()
    signal = pipeline.latest_signal(cell).value
    assert signal["signals"][0]["timestamp"] == series["timestamp"][-1].isoformat()
    ledger = pipeline.signal_ledger(cell)
    assert ledger.metadata["rows"] > 0
    record = pipeline.track_record(cell).value
    rows = read_ledger(cell.paths.ledger).rows
    assert rows["timestamp"].max() == series["timestamp"][-1]
    assert record["roles"]["shadow"]["n_scored"] + record["roles"]["shadow"]["n_in_sample"] > 0
    assert CHAMPION in record["roles"]
