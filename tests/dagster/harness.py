"""Run the real graph in-process against tmp dirs: the test implementation of the grid resource."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl

from patx_core.storage.paths import DatasetPaths, VariantPaths
from patx_dagster.assets import ALL_ASSETS
from patx_dagster.io_manager import parquet_io_manager
from patx_dagster.partitions import partition_key
from patx_dagster.resources import GridResource
from tests.cells import write_datasets_file

# What `--select '*' --partition <dataset>|<variant>` runs, leaderboard aside.
PER_VARIANT = ["ingested_candles", "raw_prices", "features", "splits", "windows", "trained_model",
               "evaluation_report", "champion_model", "latest_signal"]
#: The dataset partition the graph tests run: its settings point at the test's own file.
DATASET = "nasdaq"


def write_raw(df: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)
    return path


def cell_paths(data_dir: Path, variant: str = "smoke", dataset: str = DATASET) -> VariantPaths:
    return DatasetPaths.for_dataset(dataset, data_dir).variant(variant)


def grid_for(raw_path: Path, data_dir: Path, *, variants_file: Path | None = None,
                **dataset_fields) -> GridResource:
    """The test implementation of the grid resource: dataset ``nasdaq`` reads ``raw_path``."""
    datasets = write_datasets_file(data_dir.parent / f"{data_dir.name}.datasets.toml",
                                   {DATASET: {"source": str(raw_path), "interval": "1d", **dataset_fields}})
    return GridResource(datasets_file=str(datasets), data_dir=str(data_dir),
                       variants_file=str(variants_file) if variants_file else "")


def materialize(raw_path: Path, data_dir: Path, variant: str = "smoke", *,
                selection: list[str] | None = None, **dataset_fields) -> dg.ExecuteInProcessResult:
    grid = grid_for(raw_path, data_dir, **dataset_fields)
    unpartitioned = selection in (["variant_leaderboard"], ["ingested_candles"])
    return dg.materialize(
        ALL_ASSETS,
        partition_key=None if unpartitioned else partition_key(DATASET, variant),
        selection=selection or PER_VARIANT,
        resources={"grid": grid, "parquet_io_manager": parquet_io_manager},
        raise_on_error=False,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step's error message and causes, joined (what a user reads in the UI)."""
    parts = []
    for event in result.get_step_failure_events():
        err = event.step_failure_data.error
        while err is not None:
            parts.append(err.message)
            err = err.cause
    return "\n".join(parts)


def snapshot(root: Path, *, user_artifacts_only: bool = False) -> dict[str, str]:
    """sha256 of every file under root (or only the user-facing artifacts, not work/)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            if user_artifacts_only and "work/" in rel:
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
