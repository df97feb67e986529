"""Unattended operation: retrain when the raw file changes; after each retrain, refresh the
leaderboard and (when the gate refused the new model) the signal of the existing champion."""

from __future__ import annotations

import os

import dagster as dg

from patx_core.paths import VariantPaths
from patx_dagster.jobs import refresh_leaderboard_job, refresh_signal_job, retrain_job
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


def requests_after_retrain(partition: str | None, root: str, *, gate_failed: bool) -> list[dg.RunRequest]:
    """What to run once a variant's retrain has finished.

    Always the leaderboard (a failed gate still wrote its report). After a failed run, also the
    latest signal from the *existing* champion, if the variant has one: the blocking gate skipped
    `latest_signal` in that run, and tonight's refused model must not leave yesterday's signal
    standing as if it were today's.
    """
    requests = [dg.RunRequest(job_name=refresh_leaderboard_job.name)]
    if gate_failed and partition and VariantPaths.for_variant(partition, root).champion_checkpoint.exists():
        requests.append(dg.RunRequest(job_name=refresh_signal_job.name, partition_key=partition))
    return requests


def _after(context: dg.RunStatusSensorContext, storage: PatxStorage, *, failed: bool) -> list[dg.RunRequest]:
    run = context.dagster_run
    requests = requests_after_retrain(run.tags.get("dagster/partition"), storage.root(), gate_failed=failed)
    # run_key: one refresh per finished run, even if the sensor re-evaluates the same event.
    return [dg.RunRequest(run_key=f"{r.job_name}-{run.run_id}", job_name=r.job_name,
                          partition_key=r.partition_key) for r in requests]


@dg.run_status_sensor(name="leaderboard_after_run", run_status=dg.DagsterRunStatus.SUCCESS,
                      monitored_jobs=[retrain_job], request_jobs=[refresh_leaderboard_job],
                      default_status=dg.DefaultSensorStatus.STOPPED,
                      description="Refresh the leaderboard after each successful variant run.")
def leaderboard_after_run(context: dg.RunStatusSensorContext, storage: PatxStorage):
    return _after(context, storage, failed=False)


@dg.run_status_sensor(name="leaderboard_after_failed_run", run_status=dg.DagsterRunStatus.FAILURE,
                      monitored_jobs=[retrain_job], request_jobs=[refresh_leaderboard_job, refresh_signal_job],
                      default_status=dg.DefaultSensorStatus.STOPPED,
                      description="After a failed variant run (usually a failed gate, whose report exists): "
                                  "refresh the leaderboard, and the latest signal from the existing champion.")
def leaderboard_after_failed_run(context: dg.RunStatusSensorContext, storage: PatxStorage):
    return _after(context, storage, failed=True)
