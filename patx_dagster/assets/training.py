"""The training asset: one PriceActionTransformer per (dataset, variant), on the `gpu` pool."""

import dagster as dg

from patx_core import pipeline
from patx_dagster.assets.data import windows
from patx_dagster.partitions import grid_partitions
from patx_dagster.resources import GridResource


@dg.asset(partitions_def=grid_partitions, group_name="model", kinds={"pytorch"}, deps=[windows],
          pool="gpu")
def trained_model(context: dg.AssetExecutionContext, grid: GridResource) -> dg.MaterializeResult:
    """``<dataset>/checkpoints/<variant>/best_model.pth`` + ``scaler.pkl``, trained with early stopping
    on the pooled windows of every symbol.

    The `gpu` pool bounds how many cells train at once (``dagster instance concurrency set gpu
    N``). No RetryPolicy: training is deterministic, so a retry would fail the same way; CUDA OOM
    is handled inside the trainer by one retry at half the batch size.
    """
    cell = grid.cell(context.partition_key)

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        context.log.info(f"[{cell.key}] epoch {epoch}: "
                         + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))

    step = pipeline.train_model(cell, on_epoch_end=on_epoch_end)
    return dg.MaterializeResult(metadata=step.metadata)
