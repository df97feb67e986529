"""Nightly retrain at 02:00 UTC: one run per nightly (dataset, variant) whose input changed."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from patx_core.ingest.input_change import input_changed
from patx_dagster.jobs import retrain_job, walk_forward_job
from patx_dagster.partitions import partition_key
from patx_dagster.resources import GridResource

NIGHTLY_CRON = "0 2 * * *"
WEEKLY_CRON = "0 4 * * 6"  # Saturday 04:00 UTC: markets closed, after Friday's nightly run


def nightly_requests(grid: GridResource, day: str, now: datetime | None = None) -> list[dg.RunRequest | dg.SkipReason]:
    """A run for every nightly cell whose input changed since its last evaluation, else a skip.

    Whether it changed is :func:`patx_core.ingest.input_change.input_changed`'s call. The
    run key holds the digest: one run per cell per input (and per day while files wait in the
    landing folder, since the digest only moves once they are ingested).
    """
    out: list[dg.RunRequest | dg.SkipReason] = []
    for cell in grid.settings().nightly_cells():
        change = input_changed(cell, now)
        if not change.changed:
            stale = f"; {change.stale}" if change.stale else ""
            out.append(dg.SkipReason(f"{cell.key}: {change.reason}; not retrained{stale}"))
            continue
        key = f"{cell.key}-{change.digest[:16]}" + (f"-{change.pending}new-{day}" if change.pending else "")
        out.append(dg.RunRequest(run_key=key, partition_key=partition_key(cell.dataset.name, cell.variant.name),
                                 tags={"patx/trigger": "nightly", "patx/input_sha256": change.digest,
                                       "patx/input_change": change.reason}))
    return out


@dg.schedule(job=retrain_job, cron_schedule=NIGHTLY_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Retrain every nightly (dataset, variant) whose input changed, at 02:00 UTC. "
                         "Switch on in the UI (Automation → nightly_retrain) or "
                         "`dagster schedule start nightly_retrain`.")
def nightly_retrain(context: dg.ScheduleEvaluationContext, grid: GridResource):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    results = nightly_requests(grid, day, context.scheduled_execution_time)
    requests = [r for r in results if isinstance(r, dg.RunRequest)]
    skips = [r.skip_message for r in results if isinstance(r, dg.SkipReason)]
    for message in skips:
        context.log.info(message)
    if requests:
        return requests
    return dg.SkipReason("; ".join(skips) or "no nightly (dataset, variant) pair")


@dg.schedule(job=walk_forward_job, cron_schedule=WEEKLY_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Walk-forward of every nightly (dataset, variant), Saturdays 04:00 UTC (one model per "
                         "fold: off by default).")
def weekly_walk_forward(context: dg.ScheduleEvaluationContext, grid: GridResource):
    week = context.scheduled_execution_time.strftime("%G-W%V")
    return [dg.RunRequest(run_key=f"walk-forward-{cell.key}-{week}",
                          partition_key=partition_key(cell.dataset.name, cell.variant.name),
                          tags={"patx/trigger": "weekly-walk-forward"})
            for cell in grid.settings().nightly_cells()]
