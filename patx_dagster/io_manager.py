"""IO managers over the artifact root. Polars DataFrames as parquet:
``<data_dir>/<dataset>/work/<variant>/<asset>.parquet``; walk-forward fold plans and results as JSON:
``<data_dir>/<dataset>/work/<variant>/walk_forward/<step>.<output>.json``.

Written here rather than taken from dagster-polars because that package's 0.27 line breaks with
polars 2.x; the job is small. Writes are atomic so a killed run never leaves a torn file.
"""

from __future__ import annotations

import io
import re
from typing import Any

import dagster as dg
import polars as pl

from patx_core.evaluation import fold_store
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


FOLD_IO_MANAGER = "fold_io_manager"


class FoldFileIOManager(dg.IOManager):
    """Fold plans and fold results as ``<work_dir>/walk_forward/<step>.<output>.json``, so a fold
    group trained on one machine is stitched on another.

    A value is a dict whose ``plans`` (FoldPlans) and ``results`` (FoldResults) are encoded by
    :mod:`patx_core.evaluation.fold_store`, exactly; its other entries are plain JSON.
    """

    def __init__(self, grid: GridResource):
        self.grid = grid

    def _path(self, partition_key: str, output: dg.OutputContext) -> Any:
        # The ops inside the graph-backed asset are not asset outputs themselves: the run's
        # partition key (the cell) places their files, the step key and output name name them.
        name = ".".join(part for part in (output.step_key, output.name, output.mapping_key) if part)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        return self.grid.cell(partition_key).paths.work_dir / "walk_forward" / f"{safe}.json"

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        body = dict(obj)
        if "plans" in body:
            body["plans"] = [fold_store.plan_to_json(p) for p in body["plans"]]
        if "results" in body:
            body["results"] = [fold_store.result_to_json(r) for r in body["results"]]
        path = self._path(context.partition_key, context)
        fold_store.write_fold_file(path, body)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        body = fold_store.read_fold_file(self._path(context.partition_key, context.upstream_output))
        body.pop("format")
        if "plans" in body:
            body["plans"] = [fold_store.plan_from_json(p) for p in body["plans"]]
        if "results" in body:
            body["results"] = [fold_store.result_from_json(r) for r in body["results"]]
        return body


@dg.io_manager(required_resource_keys={"grid"}, description="Walk-forward fold plans and results as JSON under "
                                                           "<data_dir>/<dataset>/work/<variant>/walk_forward/.")
def fold_io_manager(context: dg.InitResourceContext) -> FoldFileIOManager:
    return FoldFileIOManager(context.resources.grid)


#: The IO managers the assets name, keyed as they name them (with the run's ``grid`` resource).
IO_MANAGERS = {"parquet_io_manager": parquet_io_manager, FOLD_IO_MANAGER: fold_io_manager}
