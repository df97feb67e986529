"""Polars DataFrames as parquet: ``<data_dir>/<dataset>/work/<variant>/<asset>.parquet``.

Written here rather than taken from dagster-polars because that package's 0.27 line breaks with
polars 2.x; the job is small. Writes are atomic so a killed run never leaves a torn file.
"""

from __future__ import annotations

import io

import dagster as dg
import polars as pl

from patx_core.storage.artifacts import as_path, atomic_write_with
from patx_dagster.resources import GridResource


class PolarsParquetIOManager(dg.IOManager):
    """Reads and writes the frames of the run's grid resource (its artifact root, its cells)."""

    def __init__(self, grid: GridResource):
        self.grid = grid

    def _path(self, context: dg.OutputContext | dg.InputContext):
        name = "_".join(context.asset_key.path)
        if context.has_asset_partitions:
            return self.grid.cell(context.asset_partition_key).paths.work_dir / f"{name}.parquet"
        return as_path(self.grid.root()) / "work" / f"{name}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        path = self._path(context)
        atomic_write_with(path, lambda buf: obj.write_parquet(buf))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        path = self._path(context)
        return pl.read_parquet(io.BytesIO(path.read_bytes()))


# The IO manager takes the run's `grid` resource by key rather than holding its own copy: a nested
# resource is initialized a second time, so the IO manager would parse the TOML files again (and
# could see other settings than the steps if a file changed in between), and Dagster 1.13
# initializes nested resources through an API it has deprecated itself.
@dg.io_manager(required_resource_keys={"grid"},
               description="Polars frames as parquet under <data_dir>/<dataset>/work/<variant>/.")
def parquet_io_manager(context: dg.InitResourceContext) -> PolarsParquetIOManager:
    return PolarsParquetIOManager(context.resources.grid)
