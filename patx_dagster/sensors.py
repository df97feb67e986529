"""Unattended operation: ingest and score candles when files land; refresh the leaderboard after retrains."""

from __future__ import annotations

import hashlib

import dagster as dg

from patx_core.ingest.landing import pending_files
from patx_dagster.jobs import ingest_job, refresh_leaderboard_job, retrain_job, score_job
from patx_dagster.partitions import partition_key
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


@dg.sensor(jobs=[ingest_job, score_job], minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="When candle files land: a `score` run for every nightly cell of that dataset (each "
                       "ingests the files first, then scores without retraining); datasets without a nightly "
                       "cell are only ingested.")
def new_candles(context: dg.SensorEvaluationContext, grid: GridResource):
    fingerprint = landing_fingerprint(grid)
    if fingerprint is None:
        return dg.SkipReason("no files waiting in any landing folder")
    if context.cursor == fingerprint:
        return dg.SkipReason("the waiting files were already requested")
    context.update_cursor(fingerprint)
    settings = grid.settings()
    waiting = {name for name, ds in settings.datasets.items() if ds.landing and pending_files(ds)}
    cells = [c for c in settings.nightly_cells() if c.dataset.name in waiting]
    # A score run's first step ingests under the dataset's lock, so its scoring reads the store
    # with these files merged, whichever of the dataset's runs took them.
    requests = [dg.RunRequest(run_key=f"score-{c.key}-{fingerprint}", job_name=score_job.name,
                              partition_key=partition_key(c.dataset.name, c.variant.name),
                              tags={"patx/trigger": "new-candles"}) for c in cells]
    if waiting - {c.dataset.name for c in cells}:
        requests.append(dg.RunRequest(run_key=f"ingest-{fingerprint}", job_name=ingest_job.name,
                                      tags={"patx/trigger": "new-candles"}))
    return requests


@dg.run_status_sensor(name="leaderboard_after_run", run_status=dg.DagsterRunStatus.SUCCESS,
                      monitored_jobs=[retrain_job], request_job=refresh_leaderboard_job,
                      default_status=dg.DefaultSensorStatus.STOPPED,
                      description="Refresh the leaderboard after each successful retrain (a refused "
                                  "model is a successful run too).")
def leaderboard_after_run(context: dg.RunStatusSensorContext):
    # run_key: one refresh per finished run, even if the sensor re-evaluates the same event.
    return dg.RunRequest(run_key=f"leaderboard-{context.dagster_run.run_id}")
