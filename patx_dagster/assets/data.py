"""Data assets: raw_prices → features → splits → windows, one partition per variant."""

import dagster as dg
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type

from patx_core import pipeline
from patx_core.validation import RawPricesSchema
from patx_dagster.checks import results, specs_for
from patx_dagster.partitions import variant_partitions
from patx_dagster.resources import PatxStorage

GROUP = "data"
# dagster-pandera: the UI shows the raw contract's columns and checks, and Dagster type-checks
# the validated frame against it on every materialization.
RAW_PRICES_TYPE = pandera_schema_to_dagster_type(RawPricesSchema)


@dg.asset(partitions_def=variant_partitions, group_name=GROUP, kinds={"polars", "parquet"},
          check_specs=specs_for("raw_prices"), io_manager_key="parquet_io_manager",
          dagster_type=RAW_PRICES_TYPE)
def raw_prices(context: dg.AssetExecutionContext, storage: PatxStorage):  # returns MaterializeResult(value=pl.DataFrame)
    """The raw candles, validated (pandera schema + invariants) before anything downstream runs."""
    variant = storage.variant(context.partition_key)
    step = pipeline.load_raw_prices(storage.raw_path(), variant)
    return dg.MaterializeResult(value=step.value, metadata={**step.metadata, **column_schema(step.value)},
                                check_results=results(step.checks))


def column_schema(frame: pl.DataFrame) -> dict[str, dg.TableSchema]:
    """The frame's columns and dtypes, shown in the UI's schema tab."""
    return {"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])}


@dg.asset(partitions_def=variant_partitions, group_name=GROUP, kinds={"polars", "parquet"},
          check_specs=specs_for("features"), io_manager_key="parquet_io_manager")
def features(context: dg.AssetExecutionContext, storage: PatxStorage,
             raw_prices: pl.DataFrame):  # returns MaterializeResult(value=pl.DataFrame)
    """The 14 features, triple-barrier labels and each row's trade outcome."""
    step = pipeline.build_features(raw_prices, storage.variant(context.partition_key))
    return dg.MaterializeResult(value=step.value, metadata={**step.metadata, **column_schema(step.value)},
                                check_results=results(step.checks))


@dg.asset(partitions_def=variant_partitions, group_name=GROUP, kinds={"polars", "parquet"},
          check_specs=specs_for("splits"), io_manager_key="parquet_io_manager")
def splits(context: dg.AssetExecutionContext, storage: PatxStorage,
           features: pl.DataFrame):  # returns MaterializeResult(value=pl.DataFrame)
    """Chronological, purged train/val/test rows (``split``, ``is_sample``) and the z-score scaler
    fitted on train rows only (``work/<variant>/scaler.json``)."""
    name = context.partition_key
    step = pipeline.build_splits(features, storage.variant(name), storage.paths(name))
    return dg.MaterializeResult(value=step.value, metadata=step.metadata, check_results=results(step.checks))


@dg.asset(partitions_def=variant_partitions, group_name=GROUP, kinds={"numpy"})
def windows(context: dg.AssetExecutionContext, storage: PatxStorage, splits: pl.DataFrame) -> dg.MaterializeResult:
    """The normalized matrix and each split's window end rows (windows are strided views)."""
    name = context.partition_key
    step = pipeline.build_windows(splits, storage.variant(name), storage.paths(name))
    return dg.MaterializeResult(metadata=step.metadata)
