"""Data assets: ingested_candles → raw_prices → features → splits → windows, one partition per
(dataset, variant)."""

import warnings

import dagster as dg
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type

from patx_core import pipeline
from patx_core.data.universe import UNIVERSE_PRICES_SCHEMA
from patx_dagster.checks import results, specs_for
from patx_dagster.partitions import grid_partitions
from patx_dagster.placement import CPU, worker_metadata
from patx_dagster.resources import GridResource

GROUP = "data"
# dagster-pandera: the UI shows the raw contract's columns and checks, and Dagster type-checks
# the validated frame against it on every materialization. The function is flagged beta; the
# behaviour is pinned by the graph tests, so its warning is silenced here only.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    RAW_PRICES_TYPE = pandera_schema_to_dagster_type(UNIVERSE_PRICES_SCHEMA)


@dg.asset(group_name=GROUP, kinds={"parquet"}, op_tags=CPU)
def ingested_candles(context: dg.AssetExecutionContext, grid: GridResource) -> dg.MaterializeResult:
    """New candle files from each dataset's landing folder, merged into its curated store.

    Unpartitioned: one pass visits every dataset that has a landing folder (a selection may not mix
    two partitions definitions, and ``--select '*' --partition …`` runs this first). A bad file is
    quarantined and reported here without failing the run; the good ones still merge.
    """
    from patx_core.ingest.landing import IngestError, ingest_all

    context.log.info("ingested_candles: merging the files waiting in each dataset's landing folder")
    failed = ""
    try:
        reports = ingest_all(grid.settings().datasets, grid.root())
    except IngestError as exc:
        # Another dataset's store or lock must not fail this run (most runs are for one cell);
        # a dataset that could not ingest keeps its files in landing, and its own raw_prices
        # reads what its store holds.
        reports, failed = getattr(exc, "reports", {}), str(exc)
        context.log.error(f"ingestion could not run for some datasets: {failed}")
    metadata = {name: dg.MetadataValue.json(report.metadata()) for name, report in reports.items()}
    for name, report in reports.items():
        for q in report.quarantined:
            context.log.warning(f"[{name}] quarantined {q.file}: {q.message}")
        # One line per dataset at INFO, so `make ingest` says what happened even when nothing did.
        context.log.info(f"ingest {report.summary_line()}")
    return dg.MaterializeResult(metadata={**worker_metadata(), "datasets": sorted(reports), "could_not_run": failed,
                                          **metadata})


@dg.asset(partitions_def=grid_partitions, group_name=GROUP, kinds={"polars", "parquet"},
          check_specs=specs_for("raw_prices"), io_manager_key="parquet_io_manager",
          dagster_type=RAW_PRICES_TYPE, deps=[ingested_candles], op_tags=CPU)
def raw_prices(context: dg.AssetExecutionContext, grid: GridResource):  # returns MaterializeResult(value=pl.DataFrame)
    """The dataset's candles, every symbol validated (pandera schema + invariants) before anything
    downstream runs; the run is tagged with the input's path and sha256.

    The input's sha256 is the asset's data version, so the UI marks everything downstream stale
    once new candles change it."""
    cell = grid.cell(context.partition_key)
    context.log.info(f"[{cell.key}] raw_prices: reading and validating every symbol")
    step = pipeline.load_raw_prices(cell)
    digest = step.metadata["input_sha256"]
    context.instance.add_run_tags(context.run.run_id, {
        "patx/dataset": cell.dataset.name, "patx/input_sha256": digest,
        "patx/input_path": ";".join(step.metadata["input_files"])[:4000]})
    return dg.MaterializeResult(value=step.value,
                                metadata={**worker_metadata(), **step.metadata, **column_schema(step.value)},
                                check_results=results(step.checks), data_version=dg.DataVersion(digest))


def column_schema(frame: pl.DataFrame) -> dict[str, dg.TableSchema]:
    """The frame's columns and dtypes, shown in the UI's schema tab."""
    return {"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])}


@dg.asset(partitions_def=grid_partitions, group_name=GROUP, kinds={"polars", "parquet"},
          check_specs=specs_for("features"), io_manager_key="parquet_io_manager", op_tags=CPU)
def features(context: dg.AssetExecutionContext, grid: GridResource,
             raw_prices: pl.DataFrame):  # returns MaterializeResult(value=pl.DataFrame)
    """The 14 features, triple-barrier labels and each row's trade outcome, per symbol."""
    context.log.info(f"[{context.partition_key}] features: indicators and triple-barrier labels per symbol")
    step = pipeline.build_features(raw_prices, grid.cell(context.partition_key))
    return dg.MaterializeResult(value=step.value,
                                metadata={**worker_metadata(), **step.metadata, **column_schema(step.value)},
                                check_results=results(step.checks))


@dg.asset(partitions_def=grid_partitions, group_name=GROUP, kinds={"polars", "parquet"},
          check_specs=specs_for("splits"), io_manager_key="parquet_io_manager", op_tags=CPU)
def splits(context: dg.AssetExecutionContext, grid: GridResource,
           features: pl.DataFrame):  # returns MaterializeResult(value=pl.DataFrame)
    """Train/val/test at calendar cutoffs shared by every symbol, purged per symbol, and the z-score
    scaler fitted on train rows only (``work/<variant>/scaler.json``)."""
    context.log.info(f"[{context.partition_key}] splits: calendar cutoffs, purge, scaler on train rows")
    step = pipeline.build_splits(features, grid.cell(context.partition_key))
    return dg.MaterializeResult(value=step.value, metadata={**step.metadata, **worker_metadata()},
                                check_results=results(step.checks))


@dg.asset(partitions_def=grid_partitions, group_name=GROUP, kinds={"numpy"}, op_tags=CPU)
def windows(context: dg.AssetExecutionContext, grid: GridResource, splits: pl.DataFrame) -> dg.MaterializeResult:
    """The normalized matrix and each split's window end rows (windows are strided views)."""
    context.log.info(f"[{context.partition_key}] windows: normalized matrix and window ends")
    step = pipeline.build_windows(splits, grid.cell(context.partition_key))
    return dg.MaterializeResult(metadata={**step.metadata, **worker_metadata()})
