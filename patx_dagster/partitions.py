"""The partition grid: dataset × variant, read from ``$PATX_DATASETS`` and ``$PATX_VARIANTS``.

Read when the code location loads: a dataset or variant added to its file appears as a row or
column of the grid after "Reload definitions" in the UI, and at once for shell runs. A key is
``<dataset>|<variant>`` (Dagster orders the dimensions by name), e.g. ``nasdaq|baseline``.
"""

import dagster as dg

from patx_core.settings.datasets import load_datasets
from patx_core.settings.variants import load_variants

DATASETS = load_datasets()
VARIANTS = load_variants()

grid_partitions = dg.MultiPartitionsDefinition({
    "dataset": dg.StaticPartitionsDefinition(list(DATASETS)),
    "variant": dg.StaticPartitionsDefinition(list(VARIANTS)),
})


def partition_key(dataset: str, variant: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"dataset": dataset, "variant": variant})
