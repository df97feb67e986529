"""Polars DataFrames as parquet: ``<data_dir>/<dataset>/work/<variant>/<asset>.parquet``.

Written here rather than taken from dagster-polars because that package's 0.27 line breaks with
polars 2.x; the job is small. Writes are atomic so a killed run never leaves a torn file.
"""

from __future__ import annotations

import io

import dagster as dg
import polars as pl

from patx_core.storage.artifacts import as_path, atomic_write_with
from patx_dagster.resources import PatxStorage


class PolarsParquetIOManager(dg.ConfigurableIOManager):
    storage: PatxStorage

    def _path(self, context: dg.OutputContext | dg.InputContext):
        name = "_".join(context.asset_key.path)
        if context.has_asset_partitions:
            return self.storage.cell(context.asset_partition_key).paths.work_dir / f"{name}.parquet"
        return as_path(self.storage.root()) / "work" / f"{name}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        if obj is None:  # assets that write their own files return nothing
            return
        path = self._path(context)
        atomic_write_with(path, lambda buf: obj.write_parquet(buf))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        path = self._path(context)
        return pl.read_parquet(io.BytesIO(path.read_bytes()))
