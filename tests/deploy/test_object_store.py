"""Artifacts on an object-store URL: what lets steps on different machines share checkpoints.

fsspec's in-memory filesystem (``memory://``) stands in for ``s3://``/``gs://``: it goes through
the same UPath/fsspec code, has no rename and no local directory, so anything that silently
falls back to local paths or to ``os.replace`` shows up here. The store is per process, so the
graph runs in process (``dg.materialize``). The datasets file is configuration and stays local;
the candles it points at are on the store.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import dagster as dg
import fsspec
import polars as pl
import pytest
from upath import UPath

from patx_core.storage.artifacts import (as_path, atomic_copy, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                 atomic_write_with, is_local, read_json)
from patx_core.storage.paths import DatasetPaths
from patx_dagster.io_manager import parquet_io_manager
from patx_dagster.resources import GridResource
from tests.cells import write_datasets_file

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "raw" / "nasdaq_daily_1999_2018.parquet"
DATASETS_FILE = REPO / "datasets.toml"  # defines `nasdaq` (the bundled sample)
DATASET, VARIANT = "nasdaq", "smoke"
GATE = "evaluation_report_precision_gate"


@pytest.fixture
def store_root(tmp_path, monkeypatch):
    """A fresh ``memory://`` root; the local data dir and cwd are empty dirs that must stay empty."""
    root = f"memory://patx-{uuid.uuid4().hex[:8]}"
    local = tmp_path / "local_data_dir"
    local.mkdir()
    monkeypatch.setenv("PATX_DATA_DIR", str(local))
    monkeypatch.chdir(tmp_path)
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
    assert not any(local.iterdir()), f"wrote to the local data dir: {sorted(local.rglob('*'))}"


def store_files(root: str) -> set[str]:
    """Every file under ``root``, relative to it, listed by fsspec itself (not through UPath)."""
    fs = fsspec.filesystem("memory")
    base = fs._strip_protocol(root).rstrip("/")
    return {p[len(base) + 1:] for p in fs.find(base)}


def test_atomic_writes_land_on_the_object_store(store_root):
    target = as_path(f"{store_root}/reports/v/evaluation.json")
    assert isinstance(target, UPath) and not is_local(target)
    atomic_write_json(target, {"precision": 0.71})
    atomic_write_text(f"{store_root}/reports/v/report.md", "# verdict\n")
    atomic_write_bytes(f"{store_root}/checkpoints/v/blob.bin", b"\x00\x01")
    atomic_write_with(f"{store_root}/work/v/frame.parquet", lambda buf: pl.DataFrame({"x": [1, 2]}).write_parquet(buf))
    atomic_copy(f"{store_root}/checkpoints/v/blob.bin", f"{store_root}/models/v/blob.bin")
    atomic_write_json(target, {"precision": 0.72})  # overwrite in place

    assert store_files(store_root) == {"reports/v/evaluation.json", "reports/v/report.md", "checkpoints/v/blob.bin",
                                       "work/v/frame.parquet", "models/v/blob.bin"}  # no temp files left
    with fsspec.open(f"{store_root}/reports/v/evaluation.json", "r") as fh:
        assert json.load(fh) == {"precision": 0.72}
    assert read_json(target) == {"precision": 0.72}
    with fsspec.open(f"{store_root}/models/v/blob.bin", "rb") as fh:
        assert fh.read() == b"\x00\x01"
    with fsspec.open(f"{store_root}/work/v/frame.parquet", "rb") as fh:
        assert pl.read_parquet(fh)["x"].to_list() == [1, 2]


def test_cell_paths_stay_on_the_store(store_root):
    dataset = DatasetPaths.for_dataset(DATASET, store_root)
    paths = dataset.variant(VARIANT)
    for p in (dataset.curated_dir, paths.checkpoint, paths.scaler, paths.evaluation_json, paths.report_md,
              paths.champion_checkpoint, paths.champion_manifest, paths.signal_json, paths.work_dir):
        assert isinstance(p, UPath) and str(p).startswith(f"{store_root}/{DATASET}/"), p
    grid = GridResource(datasets_file=str(DATASETS_FILE), data_dir=store_root)
    assert grid.cell(f"{DATASET}|{VARIANT}").paths == paths


def test_parquet_io_manager_round_trips_through_the_store(store_root):
    parts = dg.MultiPartitionsDefinition({"dataset": dg.StaticPartitionsDefinition([DATASET]),
                                          "variant": dg.StaticPartitionsDefinition([VARIANT])})

    @dg.asset(partitions_def=parts, io_manager_key="parquet_io_manager")
    def upstream() -> pl.DataFrame:
        return pl.DataFrame({"x": [1, 2, 3]})

    @dg.asset(partitions_def=parts, io_manager_key="parquet_io_manager")
    def downstream(upstream: pl.DataFrame) -> pl.DataFrame:
        return upstream.with_columns(y=pl.col("x") * 2)

    grid = GridResource(datasets_file=str(DATASETS_FILE), data_dir=store_root)
    result = dg.materialize([upstream, downstream], partition_key=dg.MultiPartitionKey({"dataset": DATASET,
                                                                                        "variant": VARIANT}),
                            resources={"grid": grid, "parquet_io_manager": parquet_io_manager})
    assert result.success
    work = f"{DATASET}/work/{VARIANT}"
    assert store_files(store_root) == {f"{work}/upstream.parquet", f"{work}/downstream.parquet"}
    with fsspec.open(f"{store_root}/{work}/downstream.parquet", "rb") as fh:
        assert pl.read_parquet(fh)["y"].to_list() == [2, 4, 6]
    meta = result.asset_materializations_for_node("downstream")[0].metadata
    assert meta["path"].value == f"{store_root}/{work}/downstream.parquet"


@pytest.fixture
def one_torch_thread():
    """Train on one intra-op thread (much faster than two on shared CI cores; see tests/ui/conftest.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_smoke_cell_runs_entirely_on_the_store(store_root, one_torch_thread, tmp_path):
    """Raw input read from the store, every artifact written there, nothing on local disk; on the
    NASDAQ sample the smoke model is refused, which is a successful run with a failed gate check."""
    from patx_dagster import defs
    from patx_dagster.assets import ALL_ASSETS

    atomic_write_bytes(f"{store_root}/raw/sample.parquet", SAMPLE.read_bytes())
    datasets = write_datasets_file(tmp_path / "config" / "datasets.toml",
                                   {DATASET: {"source": f"{store_root}/raw/sample.parquet", "interval": "1d"}})
    grid = GridResource(datasets_file=str(datasets), data_dir=store_root)
    # One cell's run: the retrain job's assets (not the leaderboard, nor the walk-forward).
    cell = [k.to_user_string() for k in defs.resolve_job_def("retrain_variant").asset_layer.selected_asset_keys]
    result = dg.materialize(ALL_ASSETS, selection=cell, raise_on_error=False,
                            partition_key=dg.MultiPartitionKey({"dataset": DATASET, "variant": VARIANT}),
                            resources={"grid": grid, "parquet_io_manager": parquet_io_manager})

    failures = {e.step_key: e.event_specific_data.error.message
                for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    assert result.success, f"failed steps: {failures}"
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks[GATE] is False, checks
    files = store_files(store_root)
    d, v = DATASET, VARIANT
    expected = {"raw/sample.parquet", f"{d}/work/{v}/raw_prices.parquet", f"{d}/work/{v}/features.parquet",
                f"{d}/work/{v}/splits.parquet", f"{d}/checkpoints/{v}/best_model.pth", f"{d}/checkpoints/{v}/scaler.pkl",
                f"{d}/reports/{v}/evaluation.json", f"{d}/reports/{v}/report.md", f"{d}/signals/{v}/latest.json"}
    assert expected <= files, f"missing on the store: {sorted(expected - files)}"
    assert not any(f.startswith(f"{d}/models/") for f in files), "a refused model was promoted"
    evaluation = read_json(f"{store_root}/{d}/reports/{v}/evaluation.json")
    assert evaluation["checks"]["precision_gate"]["passed"] is False
    assert read_json(f"{store_root}/{d}/signals/{v}/latest.json")["reason"] == "no champion"
    assert not any(f.endswith(".tmp") for f in files), files
