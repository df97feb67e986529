"""The walk-forward as Dagster steps: plan the folds → one step per fold group (``gpu``) → stitch.

Each executor spreads the fold steps its own way: in process one after another, the
multiprocess executor side by side on one box, Celery across the ``gpu`` workers. How many steps
(fold groups) a run uses is :func:`patx_dagster.executor.fold_steps`. Every step's output goes
through :class:`~patx_dagster.io_manager.FoldFileIOManager` (JSON under the cell's work dir, written atomically), so a
fold trained on machine A is stitched on machine B when the artifact root is shared.
"""

import time
import warnings
from typing import Any

import dagster as dg
import polars as pl

from patx_core import pipeline
from patx_dagster.checks import results, specs_for
from patx_dagster.executor import executor_kind, fold_steps
from patx_dagster.io_manager import FOLD_IO_MANAGER
from patx_dagster.partitions import grid_partitions
from patx_dagster.placement import CPU, GPU, worker_metadata
from patx_dagster.resources import GridResource

CHECK_SPECS = specs_for("walk_forward")


@dg.op(out=dg.DynamicOut(io_manager_key=FOLD_IO_MANAGER), tags=CPU)
def plan_walk_forward(context: dg.OpExecutionContext, grid: GridResource, features: pl.DataFrame):
    """The folds, cut into the fold groups of this run (one dynamic output each)."""
    started = time.time()
    cell = grid.cell(context.partition_key)
    groups = pipeline.walk_forward_plan(features, cell, groups=fold_steps)
    context.log.info(f"[{cell.key}] walk-forward: {sum(map(len, groups))} fold(s) in {len(groups)} step(s) "
                     f"({executor_kind()} executor)")
    for g, plans in enumerate(groups):
        yield dg.DynamicOutput({"started": started, "groups": len(groups), "plans": plans}, mapping_key=f"g{g}",
                               metadata={"folds": [p.index for p in plans]})


@dg.op(out=dg.Out(io_manager_key=FOLD_IO_MANAGER), tags=GPU, pool="gpu")
def train_fold_group(context: dg.OpExecutionContext, grid: GridResource, features: pl.DataFrame,
                     group: dict[str, Any]) -> dg.Output:
    """Train, threshold, trade and judge one group of folds (one ``gpu`` pool slot)."""
    cell = grid.cell(context.partition_key)

    def on_fold_end(row: dict[str, Any]) -> None:
        context.log.info(f"[{cell.key}] fold {row['fold']} ({row['test_start']} → {row['test_end']}): "
                         f"{row['gate_reason']}")

    fold_results = pipeline.walk_forward_fold_group(features, cell, group["plans"], on_fold_end=on_fold_end)
    return dg.Output({"started": group["started"], "groups": group["groups"], "results": fold_results},
                     metadata={"folds": [r.row["fold"] for r in fold_results], **worker_metadata()})


@dg.op(out={"result": dg.Out(dg.Nothing), **{s.get_python_identifier(): dg.Out(dg.Nothing) for s in CHECK_SPECS}},
       tags=CPU)
def stitch_walk_forward(context: dg.OpExecutionContext, grid: GridResource, groups: list[dict[str, Any]]):
    """Every fold group's results into walk_forward.json + .md and the stability check."""
    cell = grid.cell(context.partition_key)
    fold_results = [r for g in groups for r in g["results"]]
    step = pipeline.walk_forward_report(fold_results, cell, concurrency=executor_kind(), workers=len(groups),
                                        seconds=time.time() - min(g["started"] for g in groups))
    context.log.info(f"[{cell.key}] walk-forward: {step.checks[0].description}")
    yield dg.Output(None, "result", metadata={**step.metadata, "report": dg.MetadataValue.md(step.markdown),
                                              **worker_metadata()})
    yield from results(step.checks)


# Partitioned check specs are flagged "preview" by Dagster 1.13 (see checks.specs_for).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.graph_asset(partitions_def=grid_partitions, group_name="evaluation", kinds={"json", "markdown"},
                    check_specs=CHECK_SPECS)
    def walk_forward(features: pl.DataFrame):
        """``<dataset>/reports/<variant>/walk_forward.json`` + ``.md``: the nightly retrain replayed at
        past cutoffs, each fold trading the stretch after its cutoff; the folds train as their own
        steps (``PATX_FOLD_STEPS``) on the ``gpu`` queue and pool.

        Not part of the nightly retrain or ``make baseline``: it trains one model per fold, so it has
        its own job (``walk_forward``) and a weekly schedule.
        """
        groups = plan_walk_forward(features).map(lambda group: train_fold_group(features, group))
        return stitch_walk_forward(groups.collect())
