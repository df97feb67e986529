"""The datasets file and the grid: what a (dataset, variant) key resolves to."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from patx_core import pipeline
from patx_core.settings.datasets import DatasetConfig, load_datasets
from patx_core.settings.grid import Grid, parse_key
from patx_core.data.contract import RawDataError
from tests.cells import make_cell, write_datasets_file
from tests.conftest import make_candles

REPO = Path(__file__).resolve().parents[3]


def test_shipped_datasets_resolve_their_sources_relative_to_the_file():
    datasets = load_datasets(REPO / "datasets.toml")
    assert list(datasets) == ["nasdaq", "us_daily"]
    assert [p.name for p in datasets["nasdaq"].source_files()] == ["nasdaq_daily_1999_2018.parquet"]
    assert [p.name for p in datasets["us_daily"].source_files()] == [
        "msft_daily_1986_2017.parquet", "nasdaq_daily_1999_2018.parquet"]
    assert all(d.interval == "1d" and d.cost_bps == 5.0 for d in datasets.values())


def test_a_folder_source_is_every_parquet_file_in_it(tmp_path):
    folder = tmp_path / "universe"
    folder.mkdir()
    for name in ("b.parquet", "a.parquet", "notes.txt"):
        (folder / name).write_bytes(b"")
    path = write_datasets_file(tmp_path / "datasets.toml", {"u": {"source": "universe"}})
    assert [p.name for p in load_datasets(path)["u"].source_files()] == ["a.parquet", "b.parquet"]


@pytest.mark.parametrize("fields,fragment", [
    ({"source": "x.parquet", "costs_bps": 1}, "unknown field(s) ['costs_bps']; did you mean 'cost_bps'?"),
    ({"source": "x.parquet", "interval": "daily"}, "interval must be a positive number and a unit"),
    ({"source": "x.parquet", "cost_bps": -1}, "cost_bps must be in [0, 10000]"),
    ({"source": "x.parquet", "max_staleness": "4 days"}, "max_staleness must be"),
    ({"description": "nothing to read"}, "needs a source"),
    ({"source": "x.parquet", "nightly": "yes"}, "nightly must be true or false"),
])
def test_a_bad_dataset_field_is_refused_naming_the_file_the_dataset_and_the_field(tmp_path, fields, fragment):
    path = write_datasets_file(tmp_path / "datasets.toml", {"mine": fields})
    with pytest.raises(ValueError) as err:
        load_datasets(path)
    assert str(path) in str(err.value) and "dataset 'mine'" in str(err.value) and fragment in str(err.value)


def test_the_dataset_cost_replaces_the_variant_cost_and_the_rest_stays(tmp_path):
    path = write_datasets_file(tmp_path / "datasets.toml", {"fx": {"source": "x.parquet", "cost_bps": 0.5},
                                                            "eq": {"source": "y.parquet", "nightly": False}})
    grid = Grid.load(datasets_file=path, variants_file=REPO / "variants.toml", data_root=tmp_path / "out")
    fx, eq = grid.cell("fx", "baseline"), grid.cell("eq", "baseline")
    assert fx.variant.backtest.cost_bps == 0.5 and eq.variant.backtest.cost_bps == 5.0
    assert fx.variant.model == eq.variant.model == grid.variants["baseline"].model
    assert fx.paths.checkpoint == tmp_path / "out" / "fx" / "checkpoints" / "baseline" / "best_model.pth"
    assert grid.cell_for_key("fx|smoke").key == "fx|smoke"
    nightly = {c.key for c in grid.nightly_cells()}
    assert "fx|baseline" in nightly and not any(k.startswith("eq|") or k.endswith("|smoke") for k in nightly)


@pytest.mark.parametrize("key", ["nasdaq", "nasdaq|", "|baseline", "a|b|c"])
def test_a_partition_key_is_dataset_bar_variant(key):
    with pytest.raises(ValueError, match="<dataset>\\|<variant>"):
        parse_key(key)


def test_data_whose_spacing_is_not_the_declared_interval_is_refused_at_raw_prices(tmp_path):
    cell = make_cell(tmp_path, make_candles(900), "smoke", interval="1h")
    with pytest.raises(RawDataError) as err:
        pipeline.load_raw_prices(cell)
    assert "median candle spacing is 1d" in str(err.value) and "interval = '1h'" in str(err.value)
    assert not cell.paths.work_dir.exists(), "nothing is written before the input is accepted"


def test_raw_prices_records_the_input_and_checks_freshness(tmp_path):
    cell = make_cell(tmp_path, {"A": make_candles(900, seed=1), "B": make_candles(900, seed=2)}, "smoke",
                     max_staleness="4d")
    last = make_candles(900)["timestamp"][-1]
    step = pipeline.load_raw_prices(cell, now=last + timedelta(days=2))
    assert step.metadata["symbols"] == ["A", "B"] and len(step.metadata["input_sha256"]) == 64
    assert step.metadata["newest_candle"] == {"A": last.isoformat(), "B": last.isoformat()}
    fresh = {c.name: c for c in step.checks}["raw_prices_fresh"]
    assert fresh.passed and "2 days old" in fresh.description
    ok = pipeline.freshness_check({"A": last, "B": last}, "4d", now=last + timedelta(days=3))
    stale = pipeline.freshness_check({"A": last, "B": last - timedelta(days=6)}, "4d", now=last + timedelta(days=3))
    assert ok.passed and not stale.passed
    assert "'B'" in stale.description and "9 days old" in stale.description
    assert "5 days past max_staleness=4d" in stale.description
    years = pipeline.freshness_check({"A": last}, "4d", now=last + timedelta(days=3_220))
    assert "'A''s newest candle is 8.8 years old" in years.description, "ages read in years, not 3.22e+03d"
    assert DatasetConfig(name="x", source="y").max_staleness_seconds is None


def test_a_dataset_may_name_the_symbol_of_its_column_less_files(tmp_path):
    named = make_cell(tmp_path / "named", make_candles(900), "smoke", symbol="EURUSD")
    assert pipeline.load_raw_prices(named).metadata["symbols"] == ["EURUSD"]
    # Unnamed, a source file's stem stays its symbol: trained checkpoints, signals and evaluations keep theirs.
    unnamed = make_cell(tmp_path / "unnamed", make_candles(900), "smoke")
    assert pipeline.load_raw_prices(unnamed).metadata["symbols"] == ["data"]
    with pytest.raises(ValueError, match="symbol must be a string"):
        DatasetConfig(name="x", source="y", symbol=3)  # type: ignore[arg-type]
