"""patx_core: the PriceActionTransformer library (data, model, training, evaluation).

Plain Python, no orchestration: everything here is callable from a notebook. The public API
below is importable from ``patx_core`` itself (``from patx_core import Trainer``), and each name
is imported on first use, so that ``import patx_core`` stays light and, e.g., ``benchmarks.bench``
runs on a GPU box without polars.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from patx_core.model.threads import sleep_waiting_threads

__version__ = "0.1.0"

# Before any patx_core module imports torch: its OpenMP reads the wait policy once, when it loads.
sleep_waiting_threads()

#: Public name -> the module that defines it (the README's "Use it from Python").
_PUBLIC = {
    "PriceActionTransformer": "patx_core.model.transformer",
    "ModelConfig": "patx_core.settings.config",
    "TrainConfig": "patx_core.settings.config",
    "Trainer": "patx_core.model.trainer",
    "train_many": "patx_core.model.fused",
    "compute_indicators": "patx_core.data.features",
    "FEATURE_COLUMNS": "patx_core.data.features",
    "build_feature_table": "patx_core.data.splits",
    "split_dataset": "patx_core.data.splits",
    "load_checkpoint": "patx_core.model.checkpoint",
    "predict_frame": "patx_core.serving.predict",
}

__all__ = [*_PUBLIC, "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name is imported on first use
    from patx_core.data.features import FEATURE_COLUMNS, compute_indicators
    from patx_core.data.splits import build_feature_table, split_dataset
    from patx_core.model.fused import train_many
    from patx_core.model.trainer import Trainer
    from patx_core.model.transformer import PriceActionTransformer
    from patx_core.serving.predict import predict_frame
    from patx_core.settings.config import ModelConfig, TrainConfig
    from patx_core.model.checkpoint import load_checkpoint


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'patx_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
