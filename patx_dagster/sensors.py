"""Unattended operation: retrain when the raw file changes; refresh the leaderboard after runs."""

from __future__ import annotations

import os

import dagster as dg

from patx_dagster.jobs import refresh_leaderboard_job, retrain_job
from patx_dagster.resources import PatxStorage
from patx_dagster.schedules import nightly_variants


def raw_fingerprint(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}-{st.st_mtime_ns}"


@dg.sensor(job=retrain_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Request a retrain of every nightly variant when the raw parquet changes.")
def raw_file_changed(context: dg.SensorEvaluationContext, storage: PatxStorage):
    path = storage.raw_path()
    fingerprint = raw_fingerprint(path)
    if fingerprint is None:
        return dg.SkipReason(f"raw file {path} not found")
    if context.cursor == fingerprint:
        return dg.SkipReason("raw file unchanged")
    first_look = context.cursor is None
    context.update_cursor(fingerprint)
    if first_look:
        # Record the current file without retraining on it: the schedule owns routine retrains.
        return dg.SkipReason(f"now watching {path}")
    return [dg.RunRequest(run_key=f"{name}-{fingerprint}", partition_key=name,
                          tags={"patx/trigger": "raw-file-changed"}) for name in nightly_variants()]


def _refresh_leaderboard(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=context.dagster_run.run_id)


# A failed run usually means a failed precision gate, whose report is written and belongs on the
# leaderboard too (on real markets that is the common case), so both outcomes trigger a refresh.
leaderboard_after_run = dg.run_status_sensor(
    name="leaderboard_after_run", run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[retrain_job],
    request_job=refresh_leaderboard_job, default_status=dg.DefaultSensorStatus.STOPPED,
    description="Refresh the leaderboard after each successful variant run.")(_refresh_leaderboard)
leaderboard_after_failed_run = dg.run_status_sensor(
    name="leaderboard_after_failed_run", run_status=dg.DagsterRunStatus.FAILURE, monitored_jobs=[retrain_job],
    request_job=refresh_leaderboard_job, default_status=dg.DefaultSensorStatus.STOPPED,
    description="Refresh the leaderboard after a failed variant run (e.g. a failed gate: its report exists).")(
    _refresh_leaderboard)
