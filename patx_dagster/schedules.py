"""Nightly retrain at 02:00 UTC: one run per variant marked ``nightly`` in the variants file."""

import dagster as dg

from patx_dagster.jobs import retrain_job
from patx_dagster.partitions import VARIANTS

NIGHTLY_CRON = "0 2 * * *"


def nightly_variants() -> list[str]:
    return [name for name, v in VARIANTS.items() if v.nightly]


@dg.schedule(job=retrain_job, cron_schedule=NIGHTLY_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Retrain every nightly variant at 02:00 UTC. Switch on in the UI "
                         "(Automation → nightly_retrain) or `dagster schedule start nightly_retrain`.")
def nightly_retrain(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for name in nightly_variants():
        # run_key makes a re-evaluated tick idempotent: one run per variant per night.
        yield dg.RunRequest(run_key=f"{name}-{day}", partition_key=name, tags={"patx/trigger": "nightly"})
