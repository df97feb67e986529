"""The training asset: one PriceActionTransformer per variant, on the `gpu` pool."""

import dagster as dg

from patx_core import pipeline
from patx_dagster.assets.data import windows
from patx_dagster.partitions import variant_partitions
from patx_dagster.resources import PatxStorage


@dg.asset(partitions_def=variant_partitions, group_name="model", kinds={"pytorch"}, deps=[windows],
          pool="gpu")
def trained_model(context: dg.AssetExecutionContext, storage: PatxStorage) -> dg.MaterializeResult:
    """``checkpoints/<variant>/best_model.pth`` + ``scaler.pkl``, trained with early stopping.

    The `gpu` pool bounds how many variants train at once (``dagster instance concurrency set
    gpu N``). No RetryPolicy: training is deterministic, so a retry would fail the same way;
    CUDA OOM is handled inside the trainer by one retry at half the batch size.
    """
    name = context.partition_key

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        context.log.info(f"[{name}] epoch {epoch}: "
                         + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))

    step = pipeline.train_model(storage.variant(name), storage.paths(name), on_epoch_end=on_epoch_end)
    return dg.MaterializeResult(metadata=step.metadata)
