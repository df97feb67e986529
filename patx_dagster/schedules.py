"""Nightly retrain at 02:00 UTC: one run per nightly (dataset, variant) whose input changed."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from patx_core.storage.artifacts import read_json
from patx_core.settings.grid import GridCell
from patx_core.ingest.landing import pending_files
from patx_core.data.intervals import format_duration
from patx_core.data.universe import source_digest
from patx_dagster.jobs import retrain_job, walk_forward_job
from patx_dagster.partitions import partition_key
from patx_dagster.resources import PatxStorage

NIGHTLY_CRON = "0 2 * * *"
WEEKLY_CRON = "0 4 * * 6"  # Saturday 04:00 UTC: markets closed, after Friday's nightly run


def last_evaluated_input(cell: GridCell) -> dict:
    """The ``dataset`` block of the cell's latest completed evaluation ({} when never evaluated)."""
    path = cell.paths.evaluation_json
    return (read_json(path).get("dataset") or {}) if path.exists() else {}


def staleness_note(cell: GridCell, last_timestamp: str | None, now: datetime) -> str:
    """Why an unchanged input may still be a problem: its newest candle is past max_staleness.

    A skipped night runs no ``raw_prices``, so its freshness check would not speak; the skip
    reason says it instead.
    """
    limit = cell.dataset.max_staleness_seconds
    if limit is None or not last_timestamp:
        return ""
    age = (now - datetime.fromisoformat(last_timestamp)).total_seconds()
    if age <= limit:
        return ""
    return (f"; STALE: newest candle {last_timestamp[:10]} is {format_duration(age)} old, past "
            f"max_staleness={cell.dataset.max_staleness}")


def nightly_requests(storage: PatxStorage, day: str, now: datetime | None = None) -> list[dg.RunRequest | dg.SkipReason]:
    """A run for every nightly cell whose input changed since its last evaluation, else a skip.

    Training is deterministic, so retraining on unchanged data reproduces the same model: work
    that adds no information. Files waiting in a landing folder count as a change (the run
    ingests them first). The run key holds the digest: one run per cell per input.
    """
    out: list[dg.RunRequest | dg.SkipReason] = []
    for cell in storage.grid().nightly_cells():
        files = cell.input_files()
        digest = source_digest(files) if files else "no-input"
        pending = pending_files(cell.dataset) if cell.dataset.landing else []
        evaluated = last_evaluated_input(cell)
        if not pending and digest == evaluated.get("source_sha256"):
            stale = staleness_note(cell, evaluated.get("last_timestamp"), now or datetime.now(timezone.utc))
            out.append(dg.SkipReason(f"{cell.key}: input unchanged since its last evaluation "
                                     f"(sha256 {digest[:12]}); not retrained{stale}"))
            continue
        key = f"{cell.key}-{digest[:16]}" + (f"-{len(pending)}new-{day}" if pending else "")
        out.append(dg.RunRequest(run_key=key, partition_key=partition_key(cell.dataset.name, cell.variant.name),
                                 tags={"patx/trigger": "nightly", "patx/input_sha256": digest}))
    return out


@dg.schedule(job=retrain_job, cron_schedule=NIGHTLY_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Retrain every nightly (dataset, variant) whose input changed, at 02:00 UTC. "
                         "Switch on in the UI (Automation → nightly_retrain) or "
                         "`dagster schedule start nightly_retrain`.")
def nightly_retrain(context: dg.ScheduleEvaluationContext, storage: PatxStorage):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    results = nightly_requests(storage, day, context.scheduled_execution_time)
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
def weekly_walk_forward(context: dg.ScheduleEvaluationContext, storage: PatxStorage):
    week = context.scheduled_execution_time.strftime("%G-W%V")
    return [dg.RunRequest(run_key=f"walk-forward-{cell.key}-{week}",
                          partition_key=partition_key(cell.dataset.name, cell.variant.name),
                          tags={"patx/trigger": "weekly-walk-forward"})
            for cell in storage.grid().nightly_cells()]
