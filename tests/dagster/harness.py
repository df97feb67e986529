"""Run the real graph in-process against tmp dirs: the test implementation of the storage resource."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl

from patx_dagster.assets import ALL_ASSETS
from patx_dagster.io_manager import PolarsParquetIOManager
from patx_dagster.resources import PatxStorage

PER_VARIANT = ["raw_prices", "features", "splits", "windows", "trained_model", "evaluation_report",
               "champion_model", "latest_signal"]


def write_raw(df: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)
    return path


def materialize(raw_path: Path, data_dir: Path, variant: str = "smoke", *,
                selection: list[str] | None = None) -> dg.ExecuteInProcessResult:
    storage = PatxStorage(raw_parquet=str(raw_path), data_dir=str(data_dir))
    return dg.materialize(
        ALL_ASSETS,
        partition_key=variant if selection != ["variant_leaderboard"] else None,
        selection=selection or PER_VARIANT,
        resources={"storage": storage, "parquet_io_manager": PolarsParquetIOManager(storage=storage)},
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
            if user_artifacts_only and rel.startswith("work/"):
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
