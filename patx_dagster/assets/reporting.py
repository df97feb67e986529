"""Evaluation behind the precision gate, promotion, inference and the cross-variant leaderboard."""

import dagster as dg
import polars as pl

from patx_core import pipeline
from patx_dagster.assets.training import trained_model
from patx_dagster.checks import results, specs_for
from patx_dagster.partitions import VARIANTS, variant_partitions
from patx_dagster.resources import PatxStorage


@dg.asset(partitions_def=variant_partitions, group_name="evaluation", kinds={"json", "markdown"},
          deps=[trained_model], check_specs=specs_for("evaluation_report"))
def evaluation_report(context: dg.AssetExecutionContext, storage: PatxStorage, features: pl.DataFrame,
                      splits: pl.DataFrame) -> dg.MaterializeResult:
    """``reports/<variant>/evaluation.json`` + ``report.md``; written before the gate is judged,
    so a failed gate still leaves a report that says why."""
    name = context.partition_key
    step = pipeline.evaluate_model(features, splits, storage.variant(name), storage.paths(name),
                                   storage.raw_path())
    gate = step.value["checks"]["precision_gate"]
    if not gate["passed"]:
        context.log.warning(f"[{name}] precision gate failed: {gate['reason']}")
    metadata = {**step.metadata, "report": dg.MetadataValue.md(step.markdown)}
    return dg.MaterializeResult(metadata=metadata, check_results=results(step.checks))


@dg.asset(partitions_def=variant_partitions, group_name="serving", kinds={"pytorch"},
          deps=[evaluation_report])
def champion_model(context: dg.AssetExecutionContext, storage: PatxStorage) -> dg.MaterializeResult:
    """``models/<variant>/``: the checkpoint promoted only behind a passed (blocking) gate."""
    name = context.partition_key
    step = pipeline.promote_champion(storage.variant(name), storage.paths(name))
    return dg.MaterializeResult(metadata=step.metadata)


@dg.asset(partitions_def=variant_partitions, group_name="serving", kinds={"json"},
          deps=[champion_model])
def latest_signal(context: dg.AssetExecutionContext, storage: PatxStorage) -> dg.MaterializeResult:
    """``signals/<variant>/latest.json``: the champion applied to the newest candles."""
    name = context.partition_key
    step = pipeline.latest_signal(storage.variant(name), storage.paths(name), storage.raw_path())
    return dg.MaterializeResult(metadata=step.metadata)


@dg.asset(group_name="evaluation", kinds={"markdown"}, deps=[evaluation_report])
def variant_leaderboard(context: dg.AssetExecutionContext, storage: PatxStorage) -> dg.MaterializeResult:
    """Every variant with an ``evaluation.json``, side by side (missing partitions are fine)."""
    step = pipeline.build_leaderboard(storage.root(), list(VARIANTS))
    columns = [dg.TableColumn(c, "string") for c in step.value["columns"]]
    table = dg.MetadataValue.table(
        records=[dg.TableRecord({c: "" if r.get(c) is None else str(r[c]) for c in step.value["columns"]})
                 for r in step.value["rows"]],
        schema=dg.TableSchema(columns=columns))
    return dg.MaterializeResult(metadata={**step.metadata, "leaderboard": table,
                                          "markdown": dg.MetadataValue.md(step.markdown)})
