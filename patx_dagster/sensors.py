"""Unattended operation: ingest candles when files land; refresh the leaderboard after retrains."""

from __future__ import annotations

import hashlib

import dagster as dg

from patx_core.ingest.landing import pending_files
from patx_dagster.jobs import ingest_job, refresh_leaderboard_job, retrain_job
from patx_dagster.resources import GridResource


def landing_fingerprint(grid: GridResource) -> str | None:
    """Names, sizes and mtimes of every file waiting in any landing folder (None: nothing waits)."""
    entries = []
    for name, dataset in sorted(grid.settings().datasets.items()):
        if dataset.landing:
            for path in pending_files(dataset):
                st = path.stat()
                entries.append(f"{name}/{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16] if entries else None


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Ingest new candle files as soon as they land in a dataset's landing folder.")
def new_candles(context: dg.SensorEvaluationContext, grid: GridResource):
    fingerprint = landing_fingerprint(grid)
    if fingerprint is None:
        return dg.SkipReason("no files waiting in any landing folder")
    if context.cursor == fingerprint:
        return dg.SkipReason("the waiting files were already requested")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=f"ingest-{fingerprint}", tags={"patx/trigger": "new-candles"})


@dg.run_status_sensor(name="leaderboard_after_run", run_status=dg.DagsterRunStatus.SUCCESS,
                      monitored_jobs=[retrain_job], request_job=refresh_leaderboard_job,
                      default_status=dg.DefaultSensorStatus.STOPPED,
                      description="Refresh the leaderboard after each successful retrain (a refused "
                                  "model is a successful run too).")
def leaderboard_after_run(context: dg.RunStatusSensorContext):
    # run_key: one refresh per finished run, even if the sensor re-evaluates the same event.
    return dg.RunRequest(run_key=f"leaderboard-{context.dagster_run.run_id}")
