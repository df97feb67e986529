"""``best_model.pth`` and ``scaler.pkl``: the guide's artifacts, written atomically, loaded safely.

``best_model.pth`` holds only plain Python values and tensors, so it loads with
``torch.load(weights_only=True)`` — no code runs on load. It carries everything needed to rebuild
the model and the scaler (config, feature columns, window, scaler mean/std), so inference never
unpickles ``scaler.pkl``; that file exists for the guide's users and is written, never read here.
It also records the training data's candle interval, so inference can warn when it is handed
candles of another interval; checkpoints saved before that was recorded load with ``None``.
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from patx_core.storage.artifacts import PathLike, as_path, atomic_write_with
from patx_core.storage.jsonsafe import json_safe
from patx_core.settings.config import VariantConfig
from patx_core.model.ensemble import build_model
from patx_core.data.scaler import UniverseScaler
from patx_core.model.inference import unwrap

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model rebuilt from ``best_model.pth`` alone (in eval mode) and everything saved beside it."""

    model: nn.Module  # a PriceActionTransformer, or a SeedEnsemble of them (train.ensemble)
    scaler: UniverseScaler
    variant: VariantConfig
    feature_columns: tuple[str, ...]
    window_size: int
    metrics: dict[str, Any]
    interval_seconds: float | None = None  # median candle spacing of the training data


def save_checkpoint(path: PathLike, *, model: nn.Module, variant: VariantConfig, scaler: UniverseScaler,
                    metrics: Mapping[str, Any], feature_columns: Sequence[str],
                    interval_seconds: float | None = None) -> None:
    """Write ``best_model.pth`` atomically (the previous file survives any failure mid-save).

    A ``torch.compile``d model is unwrapped first, so the state dict has no ``_orig_mod.`` keys.
    ``interval_seconds`` is the training candles' median spacing
    (``patx_core.data.intervals.median_spacing_seconds``); ``None`` when unknown.
    """
    if interval_seconds is not None and not (math.isfinite(interval_seconds) and interval_seconds > 0):
        raise ValueError(f"save_checkpoint: interval_seconds must be a positive number of seconds or None, "
                         f"got {interval_seconds!r}")
    module = unwrap(model)
    columns = [str(c) for c in feature_columns]
    if len(columns) != variant.model.input_dim:
        raise ValueError(f"save_checkpoint: {len(columns)} feature columns but the model's "
                         f"input_dim is {variant.model.input_dim}")
    if tuple(columns) != tuple(scaler.feature_columns):
        raise ValueError(f"save_checkpoint: feature_columns {columns} differ from the scaler's "
                         f"{list(scaler.feature_columns)}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "feature_columns": columns,
        "window_size": variant.model.window_size,
        "input_dim": variant.model.input_dim,
        "variant": variant.name,
        "config": variant.to_dict(),
        "scaler": scaler.to_plain(),
        "metrics": json_safe(metrics, strict=True),  # NaN → None, as in evaluation.json
        "interval_seconds": None if interval_seconds is None else float(interval_seconds),
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-safe
    }
    atomic_write_with(path, lambda buf: torch.save(payload, buf))


def save_scaler(path: PathLike, scaler: UniverseScaler) -> None:
    """Write ``scaler.pkl`` atomically: the guide's {mean: ndarray (F,), std: ndarray (F,), feature_columns:
    list} for a pooled scaler (every single-symbol dataset), else {feature_columns, per_symbol: {symbol:
    {mean, std}}}."""
    atomic_write_with(path, lambda buf: pickle.dump(scaler.to_dict(), buf, protocol=pickle.HIGHEST_PROTOCOL))


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild model (eval mode), scaler and variant from ``best_model.pth`` with ``weights_only=True``."""
    raw = as_path(path).read_bytes()
    ckpt = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    missing = [k for k in ("model_state_dict", "config", "variant", "scaler", "feature_columns",
                           "window_size", "input_dim") if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a patx checkpoint (missing {missing})")
    variant = VariantConfig.from_dict(ckpt["variant"], ckpt["config"])
    if (variant.model.window_size, variant.model.input_dim) != (ckpt["window_size"], ckpt["input_dim"]):
        raise ValueError(f"{path}: saved window_size/input_dim {ckpt['window_size']}/{ckpt['input_dim']} "
                         f"disagree with its model config")
    model = build_model(variant.model, variant.train)
    model.load_state_dict(ckpt["model_state_dict"])
    model.to(map_location).eval()
    metrics = ckpt.get("metrics") or {}
    interval = ckpt.get("interval_seconds")  # absent from checkpoints saved before it was recorded
    return LoadedCheckpoint(model=model, scaler=UniverseScaler.from_dict(ckpt["scaler"]), variant=variant,
                            feature_columns=tuple(ckpt["feature_columns"]), window_size=int(ckpt["window_size"]),
                            metrics=dict(metrics), interval_seconds=None if interval is None else float(interval))
