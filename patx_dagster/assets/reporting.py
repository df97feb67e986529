"""Evaluation, promotion behind the precision gate, inference and the grid's leaderboard."""

import dagster as dg
import polars as pl

from patx_core import pipeline
from patx_dagster.assets.data import ingested_candles
from patx_dagster.assets.training import trained_model
from patx_dagster.checks import results, specs_for
from patx_dagster.partitions import grid_partitions
from patx_dagster.placement import CPU, GPU, worker_metadata
from patx_dagster.resources import GridResource


@dg.asset(partitions_def=grid_partitions, group_name="evaluation", kinds={"json", "markdown"},
          deps=[trained_model], check_specs=specs_for("evaluation_report"), op_tags=GPU)
def evaluation_report(context: dg.AssetExecutionContext, grid: GridResource, features: pl.DataFrame,
                      splits: pl.DataFrame) -> dg.MaterializeResult:
    """``<dataset>/reports/<variant>/evaluation.json`` + ``report.md``. A completed evaluation is a
    successful step whatever its verdict; the gate's check records the verdict."""
    cell = grid.cell(context.partition_key)
    context.log.info(f"[{cell.key}] evaluation_report: threshold on val, metrics, backtest, report")
    step = pipeline.evaluate_model(features, splits, cell)
    gate = step.value["checks"]["precision_gate"]
    selection = step.value["checks"]["precision_gate_selection"]
    if not gate["passed"]:
        context.log.warning(f"[{cell.key}] precision gate failed: {gate['reason']}")
    elif not selection["passed"]:
        context.log.warning(f"[{cell.key}] selection gate failed: {selection['reason']}")
    metadata = {**step.metadata, "report": dg.MetadataValue.md(step.markdown)}
    return dg.MaterializeResult(metadata={**metadata, **worker_metadata()}, check_results=results(step.checks))


@dg.asset(partitions_def=grid_partitions, group_name="serving", kinds={"pytorch"},
          deps=[evaluation_report], op_tags=CPU)
def champion_model(context: dg.AssetExecutionContext, grid: GridResource) -> dg.MaterializeResult:
    """``<dataset>/models/<variant>/``: the checkpoint, promoted only when this evaluation's gate
    passed; otherwise ``promoted: false`` with the reason, and the earlier champion stays."""
    cell = grid.cell(context.partition_key)
    context.log.info(f"[{cell.key}] champion_model: promoting only if the precision gate passed")
    step = pipeline.promote_champion(cell)
    if not step.metadata["promoted"]:
        context.log.info(f"[{cell.key}] not promoted: {step.metadata['reason']}")
    return dg.MaterializeResult(metadata={**step.metadata, **worker_metadata()})


@dg.asset(partitions_def=grid_partitions, group_name="serving", kinds={"json"},
          deps=[champion_model, ingested_candles], op_tags=CPU)
def latest_signal(context: dg.AssetExecutionContext, grid: GridResource) -> dg.MaterializeResult:
    """``<dataset>/signals/<variant>/latest.json``: the current champion applied to every symbol's
    newest candle, or "hold" with the reason "no champion"."""
    context.log.info(f"[{context.partition_key}] latest_signal: scoring each symbol's newest candle")
    step = pipeline.latest_signal(grid.cell(context.partition_key))
    return dg.MaterializeResult(metadata={**step.metadata, **worker_metadata()})


@dg.asset(partitions_def=grid_partitions, group_name="serving", kinds={"parquet"}, deps=[latest_signal], op_tags=CPU)
def signal_ledger(context: dg.AssetExecutionContext, grid: GridResource) -> dg.MaterializeResult:
    """``<dataset>/ledger/<variant>/signals.parquet``: open rows resolved from the store, the monitor's
    decision on the champion, then every new candle scored by the champion and the shadow."""
    step = pipeline.signal_ledger(grid.cell(context.partition_key))
    if step.metadata["suspended"]:
        context.log.warning(f"[{context.partition_key}] the champion is suspended: its rows hold")
    return dg.MaterializeResult(metadata={**step.metadata, **worker_metadata()})


@dg.asset(partitions_def=grid_partitions, group_name="serving", kinds={"json", "markdown"}, deps=[signal_ledger],
          check_specs=specs_for("track_record"), op_tags=CPU)
def track_record(context: dg.AssetExecutionContext, grid: GridResource) -> dg.MaterializeResult:
    """``<dataset>/ledger/<variant>/track_record.json`` + ``.md``: live precision per role against the
    backtest, and the monitor's statistic."""
    step = pipeline.track_record(grid.cell(context.partition_key))
    return dg.MaterializeResult(metadata={**worker_metadata(), **step.metadata,
                                          "track_record": dg.MetadataValue.md(step.markdown)},
                                check_results=results(step.checks))


@dg.asset(group_name="evaluation", kinds={"markdown"}, deps=[evaluation_report], op_tags=CPU)
def variant_leaderboard(context: dg.AssetExecutionContext, grid: GridResource) -> dg.MaterializeResult:
    """Every (dataset, variant) with an ``evaluation.json``, side by side (missing cells are fine)."""
    context.log.info("variant_leaderboard: every evaluation.json under the data root")
    settings = grid.settings()
    cells = [settings.cell(d, v) for d in settings.datasets for v in settings.variants]
    step = pipeline.build_leaderboard(grid.root(), cells)
    columns = [dg.TableColumn(c, "string") for c in step.value["columns"]]
    table = dg.MetadataValue.table(
        records=[dg.TableRecord({c: "" if r.get(c) is None else str(r[c]) for c in step.value["columns"]})
                 for r in step.value["rows"]],
        schema=dg.TableSchema(columns=columns))
    return dg.MaterializeResult(metadata={**worker_metadata(), **step.metadata, "leaderboard": table,
                                          "markdown": dg.MetadataValue.md(step.markdown)})
