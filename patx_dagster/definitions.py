"""The code location: ``dagster dev`` / ``dagster asset materialize -m patx_dagster``."""

import dagster as dg

from patx_dagster.assets import ALL_ASSETS
from patx_dagster.io_manager import PolarsParquetIOManager
from patx_dagster.jobs import refresh_leaderboard_job, refresh_signal_job, retrain_job
from patx_dagster.resources import PatxStorage
from patx_dagster.schedules import nightly_retrain
from patx_dagster.sensors import leaderboard_after_failed_run, leaderboard_after_run, raw_file_changed

storage = PatxStorage()

defs = dg.Definitions(
    # Each variant's graph is a straight chain, so a process per step buys no parallelism and
    # costs a Python + torch + dagster start-up per step (measured: 44 of 53 s of a smoke run on
    # 2 CPU cores). Variants still run in parallel as separate runs (queue + `gpu` pool).
    executor=dg.in_process_executor,
    assets=ALL_ASSETS,
    jobs=[retrain_job, refresh_leaderboard_job, refresh_signal_job],
    schedules=[nightly_retrain],
    sensors=[raw_file_changed, leaderboard_after_run, leaderboard_after_failed_run],
    resources={"storage": storage, "parquet_io_manager": PolarsParquetIOManager(storage=storage)},
)
