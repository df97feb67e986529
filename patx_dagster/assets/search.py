"""The search asset: ``patx search`` for one (dataset, variant) cell, on the `gpu` pool.

Not part of the nightly retrain (``retrain_variant`` leaves it out): a search is asked for, and its
winner is judged by one ordinary materialization of the tuned variant, never by the search itself.
"""

from typing import Iterator

import dagster as dg

from patx_core.search.study import run_search
from patx_dagster.partitions import grid_partitions
from patx_dagster.placement import GPU, worker_metadata
from patx_dagster.resources import GridResource


@dg.asset(partitions_def=grid_partitions, group_name="search", kinds={"optuna", "parquet"}, pool="gpu",
          op_tags=GPU, output_required=False)
def search_study(context: dg.AssetExecutionContext, grid: GridResource) -> Iterator[dg.MaterializeResult]:
    """``<dataset>/search/<variant>/``: the Optuna study on val (``trials.parquet``, ``search.md``,
    ``best.toml``). A variant without a ``[NAME.search]`` table has nothing to search: the step
    logs so and materializes nothing, so ``--select '*'`` over such a cell still succeeds."""
    cell = grid.cell(context.partition_key)
    if cell.variant.search is None:
        context.log.info(f"[{cell.key}] search_study: variant {cell.variant.name!r} has no "
                         f"[{cell.variant.name}.search] table; nothing to search")
        return
    report = run_search(cell, on_trial=lambda o: context.log.info(
        f"[{cell.key}] trial #{o.number} {o.state}: {o.objective} {o.params}"))
    context.log.info(f"[{cell.key}] {report.final_line()}")
    best = report.best
    yield dg.MaterializeResult(metadata={
        "search": dg.MetadataValue.md(report.markdown),
        "trials": report.trials.height,
        "finished": int(report.trials["state"].is_in(["COMPLETE", "PRUNED"]).sum()),
        "objective": report.objective,
        "best_trial": None if best is None else best.number,
        "best_value": None if best is None else best.objective,
        "best_toml": None if report.best_toml is None else str(report.best_toml),
        "judge_command": report.judge_command,
        **worker_metadata()})
