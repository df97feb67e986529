"""The code location: ``dagster dev`` / ``dagster asset materialize -m patx_dagster``."""

import dagster as dg

from patx_dagster.assets import ALL_ASSETS
from patx_dagster.executor import resolve_executor
from patx_dagster.io_manager import IO_MANAGERS
from patx_dagster.jobs import (ingest_job, refresh_leaderboard_job, retrain_job, score_job, search_job,
                               walk_forward_job)
from patx_dagster.resources import GridResource
from patx_dagster.schedules import nightly_retrain, weekly_walk_forward
from patx_dagster.sensors import leaderboard_after_run, new_candles

grid = GridResource()

defs = dg.Definitions(
    # In process by default: each cell's graph is a straight chain, so a process per step buys no
    # parallelism and costs a Python + torch + dagster start-up per step (measured: 44 of 53 s of a
    # smoke run on 2 CPU cores); cells still run in parallel as separate runs (queue + `gpu` pool).
    # PATX_EXECUTOR=multiprocess|celery spreads the steps (walk-forward folds above all) instead.
    executor=resolve_executor(),
    assets=ALL_ASSETS,
    jobs=[retrain_job, ingest_job, refresh_leaderboard_job, walk_forward_job, score_job, search_job],
    schedules=[nightly_retrain, weekly_walk_forward],
    sensors=[new_candles, leaderboard_after_run],
    resources={"grid": grid, **IO_MANAGERS},
)
