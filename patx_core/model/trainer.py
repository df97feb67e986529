"""Training one PriceActionTransformer: the guide's recipe as a GPU-first loop that is also correct
(and deterministic) on CPU.

The loop keeps the device busy: no host sync inside the step loop — the per-step loss sums and
predictions are written into device buffers, and one transfer per epoch brings back the loss and
confusion counts. bf16 autocast and fused AdamW on CUDA; on CPU the same code runs in fp32. The
device-resident pieces it drives (windows gathered on the device, padded batches, the CUDA-graph
step, the lr warm-up) are :mod:`patx_core.model.device_step`; the rules it shares with K-model
training (early stopping on val loss with the best weights restored, the out-of-memory retry, the
non-finite-loss error, the graph capture) are :mod:`patx_core.model.loop`. Predicting is
:mod:`patx_core.model.inference`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

from patx_core.data.windows import WindowedData
from patx_core.model.device_step import Batches, DeviceWindows, GraphedStep, WarmUp, confusion_counts
from patx_core.model.loop import (
    METRIC_NAMES,
    EarlyStopping,
    EpochCallback,
    NonFiniteLossError,
    _metrics,
    autocast,
    capture_step,
    check_finite,
    check_training_data,
    fit_with_oom_retry,
    resolve_device,
    resolve_pos_weight,
)
from patx_core.model.progress import PROGRESS_INTERVAL_S, EpochProgress, ProgressCallback
from patx_core.model.transformer import PriceActionTransformer, count_parameters
from patx_core.settings.config import ModelConfig, TrainConfig

log = logging.getLogger(__name__)

# The recipe's shared names, importable from the module that trains one model.
__all__ = ["METRIC_NAMES", "EpochCallback", "NonFiniteLossError", "Trainer", "_metrics", "check_training_data",
           "resolve_device", "resolve_pos_weight"]


class Trainer:
    """Trains a ``PriceActionTransformer`` on ``data``'s train split, early-stopping on val.

    ``train()`` returns the history dict (see ``docs/ARCHITECTURE.md``); afterwards ``model`` is
    the unwrapped module holding the best epoch's weights. ``on_epoch_end(epoch, metrics)`` is
    called once per epoch (1-based) with plain floats, so an orchestrator can forward progress;
    ``on_progress(epoch, max_epochs, steps_done, steps_total)`` inside an epoch, at most every
    ~10 s (:mod:`patx_core.model.progress`).
    """

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, data: WindowedData, *,
                 on_epoch_end: EpochCallback | None = None, on_progress: ProgressCallback | None = None,
                 progress_interval_s: float = PROGRESS_INTERVAL_S) -> None:
        check_training_data(model_config, data)
        self.model_config = model_config
        self.train_config = train_config
        self.data = data
        self.on_epoch_end = on_epoch_end
        self.on_progress = on_progress
        self.progress_interval_s = progress_interval_s
        self.device = resolve_device(train_config.device)
        self.pos_weight = resolve_pos_weight(train_config.pos_weight, data.split_labels("train"))
        self.use_amp = train_config.amp and self.device.type == "cuda"
        self._model: nn.Module | None = None
        self._graph: GraphedStep | None = None
        self._warmup: WarmUp | None = None

    @property
    def model(self) -> nn.Module:
        """The unwrapped model with the best epoch's weights (available after ``train()``)."""
        if self._model is None:
            raise RuntimeError("Trainer.model is available after train()")
        return self._model

    def train(self) -> dict[str, Any]:
        """Train to early stopping; on CUDA out-of-memory, retry once at half the batch size."""
        dev = DeviceWindows(self.data, self.device)
        return fit_with_oom_retry(lambda batch, eval_batch: self._fit(dev, batch, eval_batch),
                                  self.train_config.batch_size, self.train_config.eval_batch_size, self.device)

    # -- one complete training run -------------------------------------------------------------

    def _fit(self, dev: DeviceWindows, batch_size: int, eval_batch_size: int) -> dict[str, Any]:
        cfg = self.train_config
        start = time.perf_counter()
        self._model, self._graph = None, None  # a failed attempt's model and graph are freed first
        # Seed the global RNG (init, dropout) and a private one (shuffle): same inputs, same history.
        torch.manual_seed(cfg.seed)
        shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        model = PriceActionTransformer(self.model_config).to(self.device)
        self._model = model
        pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=self.device)
        loss_fn = nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight)
        # Fused AdamW keeps its step counters on the device: one kernel, and no `.item()` per step;
        # capturable so the CUDA path can record it inside the step's graph.
        fused = self.device.type in ("cuda", "cpu")
        # A warm-up changes the lr every step; the fused kernels (and a captured graph) read it from
        # a device tensor. Without warm-up the lr stays a Python float, as in the guide.
        lr: float | torch.Tensor = (torch.tensor(cfg.lr, device=self.device) if cfg.warmup_steps and fused
                                    else cfg.lr)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay,
                                      fused=True if fused else None, capturable=self.device.type == "cuda")
        self._warmup = WarmUp(optimizer, cfg.lr, cfg.warmup_steps) if cfg.warmup_steps else None
        if self.device.type == "cuda":
            self._graph = self._capture_step(model, optimizer, loss_fn, dev, batch_size)
        val = Batches.pad(dev.ends["val"], eval_batch_size)
        train_ends = dev.ends["train"]
        stopping = EarlyStopping(cfg, log)
        best_state: dict[str, torch.Tensor] | None = None

        for epoch in range(1, cfg.max_epochs + 1):
            epoch_start = time.perf_counter()
            if cfg.shuffle:
                order = torch.randperm(train_ends.numel(), generator=shuffle_gen).to(self.device)
                train = Batches.pad(train_ends[order], batch_size)
            else:
                train = Batches.pad(train_ends, batch_size)
            progress = EpochProgress(epoch, cfg.max_epochs, train.steps, callback=self.on_progress,
                                     interval_s=self.progress_interval_s)
            try:
                step_loss, train_pred = self._train_epoch(model, optimizer, loss_fn, dev, train, progress)
            finally:
                progress.close()
            val_loss, val_pred = self._eval_epoch(model, loss_fn, dev, val)
            # The epoch's single device→host transfer.
            stats = torch.cat([step_loss.sum().unsqueeze(0),
                               confusion_counts(train_pred[: train.n], dev.y[train.idx[: train.n]]),
                               val_loss.unsqueeze(0),
                               confusion_counts(val_pred[: val.n], dev.y[val.idx[: val.n]])]).tolist()
            check_finite(stats[0], stats[4], epoch, step_loss, batch_size)
            if stopping.end_epoch(epoch, stats, train.n, val.n, time.perf_counter() - epoch_start, self.on_epoch_end):
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if not stopping.running:
                break

        assert best_state is not None  # the first epoch always improves on +inf (finite checked)
        model.load_state_dict(best_state)
        model.eval()
        history = stopping.finish(seconds=time.perf_counter() - start, device=str(self.device),
                                  params=count_parameters(model), batch_size=batch_size, pos_weight=self.pos_weight,
                                  compiled=False, cuda_graph=self._graph is not None)
        self._graph = None  # frees the graph's memory pool
        return history

    def _train_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                     dev: DeviceWindows, batches: Batches,
                     progress: EpochProgress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the train batches. Nothing here waits for the device (tests pin this);
        ``progress`` counts issued steps (a clock read per step, no device read)."""
        model.train()
        step_loss = torch.zeros(batches.steps, device=self.device)  # (steps,) summed per step
        pred = torch.empty(batches.idx.numel(), dtype=torch.bool, device=self.device)  # (steps*B,)
        for step, sl in batches:
            idx, weight, count = batches.idx[sl], batches.weight[sl], batches.count[step]
            if self._warmup is not None:
                self._warmup.before_step()
            if self._graph is not None:
                loss_sum, step_pred = self._graph.replay(idx, weight, count)
            else:
                loss_sum, step_pred = self._step(model, optimizer, loss_fn, dev, idx, weight, count)
            step_loss[step] = loss_sum
            pred[sl] = step_pred
            if progress is not None:
                progress.advance(step + 1)
        return step_loss, pred

    def _step(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, dev: DeviceWindows,
              idx: torch.Tensor, weight: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather, forward, loss, backward, AdamW: returns the batch's summed loss and predictions."""
        xb, yb = dev.gather(idx)  # (B, W, F), (B,)
        with autocast(self.use_amp):
            logits = model(xb)  # (B,)
        logits = logits.float()  # (B,) the loss in fp32 under autocast
        loss_sum = (loss_fn(logits, yb) * weight).sum()  # () padding has weight 0
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / count).backward()
        optimizer.step()
        return loss_sum.detach(), logits.detach() > 0  # (), (B,)

    def _capture_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                      dev: DeviceWindows, batch_size: int) -> GraphedStep | None:
        """The whole training step (gather, forward, loss, backward, AdamW) as a CUDA graph, or ``None``."""
        saved = [p.detach().clone() for p in model.parameters()]

        @torch.no_grad()
        def restore() -> None:  # the seeded init and a fresh optimizer
            for p, s in zip(model.parameters(), saved):
                p.copy_(s)
            for state in optimizer.state.values():
                for value in state.values():
                    if isinstance(value, torch.Tensor):
                        value.zero_()  # AdamW's fresh state: step 0, zero moments

        inputs = (dev.ends["train"][:1].expand(batch_size).clone(), torch.ones(batch_size, device=self.device),
                  torch.tensor(float(batch_size), device=self.device))
        return capture_step(lambda i, w, c: self._step(model, optimizer, loss_fn, dev, i, w, c), inputs,
                            self.device, restore=restore)

    @torch.no_grad()
    def _eval_epoch(self, model: nn.Module, loss_fn: nn.Module, dev: DeviceWindows,
                    batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and predictions over a split, kept on the device."""
        model.eval()
        total = torch.zeros((), device=self.device)
        pred = torch.empty(batches.idx.numel(), dtype=torch.bool, device=self.device)
        for _, sl in batches:
            xb, yb = dev.gather(batches.idx[sl])  # (B, W, F), (B,)
            with autocast(self.use_amp):
                logits = model(xb)  # (B,)
            logits = logits.float()
            total += (loss_fn(logits, yb) * batches.weight[sl]).sum()
            pred[sl] = logits > 0
        return total, pred
