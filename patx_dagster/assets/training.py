"""The training asset: one PriceActionTransformer per (dataset, variant), on the `gpu` pool."""

import contextlib
import logging

import dagster as dg

from patx_core import pipeline
from patx_dagster.assets.data import windows
from patx_dagster.partitions import grid_partitions
from patx_dagster.placement import GPU, worker_metadata
from patx_dagster.resources import GridResource


@dg.asset(partitions_def=grid_partitions, group_name="model", kinds={"pytorch"}, deps=[windows],
          pool="gpu", op_tags=GPU)
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

    def on_progress(epoch: int, max_epochs: int, done: int, total: int) -> None:
        # At most every ~10 s (the trainer bounds the rate): a long epoch is not a silent one.
        context.log.info(f"[{cell.key}] epoch {epoch}/{max_epochs}: {done}/{total} batches")

    context.log.info(f"[{cell.key}] trained_model: training {cell.variant.name!r} "
                     f"(up to {cell.variant.train.max_epochs} epochs, device {cell.variant.train.device})")
    with _quiet(logging.getLogger("patx_core.model.trainer")):
        step = pipeline.train_model(cell, on_epoch_end=on_epoch_end, on_progress=on_progress)
    return dg.MaterializeResult(metadata={**step.metadata, **worker_metadata()})


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """The trainer's INFO lines (the guide's three per epoch) off while the asset forwards each epoch
    as one line; its warnings still reach the run's log (``instance.yaml`` manages ``patx_core``)."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
