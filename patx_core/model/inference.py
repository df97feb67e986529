"""Predicting with a trained model: what evaluation and serving need, without the training loop."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from patx_core.data.windows import WindowedData
from patx_core.model.device_step import DeviceWindows
from patx_core.settings.config import TrainConfig


def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (state dict keys without ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)


@torch.no_grad()
def predict_proba(model: nn.Module, data: WindowedData, split: str, *, batch_size: int | None = None,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Buy probabilities (float64, one per sample of ``split``, in ``data.ends[split]`` order).

    Runs in fp32 without autocast so evaluation figures do not depend on the device's precision.
    ``device=None`` uses the model's own device; another device moves the model there.
    The model's train/eval mode is restored afterwards.
    """
    if split not in data.ends:
        raise ValueError(f"predict_proba: unknown split {split!r}; data has {list(data.ends)}")
    batch_size = batch_size or TrainConfig().eval_batch_size
    module = unwrap(model)
    target = next(module.parameters()).device if device is None else torch.device(device)
    module.to(target)
    was_training = module.training
    module.eval()
    try:
        dev = DeviceWindows(data, target)
        ends = dev.ends[split]
        probs = [torch.sigmoid(module(dev.gather(ends[i:i + batch_size])[0]).float())  # (b,)
                 for i in range(0, ends.numel(), batch_size)]
        out = torch.cat(probs) if probs else torch.empty(0, device=target)
        return out.cpu().numpy().astype(np.float64)
    finally:
        module.train(was_training)
