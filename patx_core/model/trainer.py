"""The guide's training recipe as a GPU-first loop that is also correct (and deterministic) on CPU.

The loop keeps the device busy: no host sync inside the step loop — the per-step loss sums and
predictions are written into device buffers, and one transfer per epoch brings back the loss and
confusion counts; a non-finite epoch loss is then located to its step from the per-step buffer.
bf16 autocast and fused AdamW on CUDA; on CPU the same code runs in fp32 without autocast. The
device-resident pieces it drives (windows gathered on the device, padded batches, the CUDA-graph
step, the lr warm-up) are :mod:`patx_core.model.device_step`; if graph capture fails, the same
step runs eagerly.

Early stopping watches the val loss (patience 5 by default) and the best epoch's weights are kept
in memory and restored at the end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from patx_core.data.windows import WindowedData
from patx_core.model.device_step import Batches, DeviceWindows, GraphedStep, WarmUp, confusion_counts
from patx_core.model.progress import PROGRESS_INTERVAL_S, EpochProgress, ProgressCallback
from patx_core.model.transformer import PriceActionTransformer, count_parameters
from patx_core.settings.config import ModelConfig, TrainConfig

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
METRIC_NAMES = ("loss", "accuracy", "precision", "recall", "f1")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or ±inf; the message names the epoch and (for training) the step."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; an explicit CUDA request without CUDA fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device is {name!r} but CUDA is not available on this machine")
    return device


def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (state dict keys without ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)


def _metrics(loss_sum: float, tp: float, pred_pos: float, pos: float, n: int) -> dict[str, float]:
    """Loss, accuracy, precision, recall, F1 (sklearn's ``zero_division=0`` convention)."""
    tn = n - pred_pos - pos + tp
    precision = tp / pred_pos if pred_pos else 0.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"loss": loss_sum / n, "accuracy": (tp + tn) / n, "precision": precision,
            "recall": recall, "f1": f1}


def resolve_pos_weight(pos_weight: float | str | None, train_labels: np.ndarray) -> float | None:
    """``None`` → plain BCE; ``"auto"`` → negatives / positives of the train labels; a number as is."""
    if pos_weight is None:
        return None
    if pos_weight == "auto":
        pos = float((train_labels > 0.5).sum())
        neg = float(train_labels.size - pos)
        if pos == 0 or neg == 0:
            raise ValueError(f'TrainConfig.pos_weight="auto" needs both classes in the train labels; '
                             f"got {int(pos)} positives and {int(neg)} negatives")
        return neg / pos
    return float(pos_weight)


def check_training_data(model_config: ModelConfig, data: WindowedData, *, where: str = "") -> None:
    """Refuse windows of another shape than the model's, or without train and val samples.

    ``where`` prefixes each message (``"train_many: model 2: "``) so a fused run names its model.
    """
    if data.window_size != model_config.window_size:
        raise ValueError(f"{where}ModelConfig.window_size={model_config.window_size} but the data's windows "
                         f"are {data.window_size} rows")
    if data.matrix.shape[1] != model_config.input_dim:
        raise ValueError(f"{where}ModelConfig.input_dim={model_config.input_dim} but the data has "
                         f"{data.matrix.shape[1]} feature columns")
    for split in ("train", "val"):
        if split not in data.ends or data.n_sequences(split) == 0:
            raise ValueError(f"{where or 'Trainer '}needs a non-empty {split!r} split; data has "
                             f"{ {s: data.n_sequences(s) for s in data.ends} }")


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
        batch, eval_batch = self.train_config.batch_size, self.train_config.eval_batch_size
        try:
            return self._fit(dev, batch, eval_batch)
        except torch.cuda.OutOfMemoryError as exc:
            if batch < 2:
                raise RuntimeError(f"CUDA out of memory at batch size {batch}; nothing smaller to try") from exc
            log.warning("CUDA out of memory at batch size %d (%s); retrying once at batch size %d",
                        batch, str(exc).splitlines()[0] if str(exc) else "OOM", batch // 2)
        # Retried outside the except block so the failed attempt's frames (and tensors) are freed.
        self._model, self._graph = None, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            return self._fit(dev, batch // 2, max(1, eval_batch // 2))
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeError(f"CUDA out of memory at batch size {batch} and again at the retry with "
                               f"{batch // 2}; lower TrainConfig.batch_size / eval_batch_size or free "
                               f"GPU memory") from exc

    # -- one complete training run -------------------------------------------------------------

    def _fit(self, dev: DeviceWindows, batch_size: int, eval_batch_size: int) -> dict[str, Any]:
        cfg = self.train_config
        start = time.perf_counter()
        # Seed the global RNG (init, dropout) and a private one (shuffle): same inputs, same history.
        torch.manual_seed(cfg.seed)
        shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        model = PriceActionTransformer(self.model_config).to(self.device)
        self._model = model
        step_model = torch.compile(model, mode=cfg.compile_mode, dynamic=False) if cfg.compile else model
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
        self._graph = None
        if self.device.type == "cuda" and not cfg.compile:
            self._graph = self._capture_step(model, optimizer, loss_fn, dev, batch_size)
        val = Batches.pad(dev.ends["val"], eval_batch_size)
        train_ends = dev.ends["train"]
        history: dict[str, Any] = {f"{s}_{m}": [] for s in ("train", "val") for m in METRIC_NAMES}
        history["epoch_seconds"] = []
        best_loss, best_epoch, best_state, wait, stopped_early = math.inf, 0, None, 0, False

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
                step_loss, train_pred = self._train_epoch(step_model, optimizer, loss_fn, dev, train, progress)
            finally:
                progress.close()
            val_loss, val_pred = self._eval_epoch(step_model, loss_fn, dev, val)
            # The epoch's single device→host transfer.
            stats = torch.cat([step_loss.sum().unsqueeze(0),
                               confusion_counts(train_pred[: train.n], dev.y[train.idx[: train.n]]),
                               val_loss.unsqueeze(0),
                               confusion_counts(val_pred[: val.n], dev.y[val.idx[: val.n]])]).tolist()
            self._check_finite(stats[0], stats[4], epoch, step_loss, batch_size)
            tr, va = _metrics(*stats[:4], train.n), _metrics(*stats[4:], val.n)
            for m in METRIC_NAMES:
                history[f"train_{m}"].append(tr[m])
                history[f"val_{m}"].append(va[m])
            history["epoch_seconds"].append(time.perf_counter() - epoch_start)

            improved = va["loss"] < best_loss
            log.info("Epoch [%d/%d]", epoch, cfg.max_epochs)
            log.info("Train Loss: %.4f | Acc: %.4f | F1: %.4f", tr["loss"], tr["accuracy"], tr["f1"])
            log.info("Val Loss: %.4f | Acc: %.4f | F1: %.4f", va["loss"], va["accuracy"], va["f1"])
            if improved:
                best_loss, best_epoch, wait = va["loss"], epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                log.info("New best val loss %.4f at epoch %d; weights kept in memory", va["loss"], epoch)
            else:
                wait += 1
            if self.on_epoch_end is not None:
                metrics = {f"train_{m}": tr[m] for m in METRIC_NAMES} | {f"val_{m}": va[m] for m in METRIC_NAMES}
                metrics |= {"epoch_seconds": history["epoch_seconds"][-1], "best_val_loss": best_loss,
                            "is_best": float(improved)}
                self.on_epoch_end(epoch, metrics)
            if wait >= cfg.patience:
                stopped_early = True
                log.info("Early stopping: val loss has not improved for %d epochs (best %.4f at epoch %d)",
                         cfg.patience, best_loss, best_epoch)
                break

        assert best_state is not None  # the first epoch always improves on +inf (finite checked)
        model.load_state_dict(best_state)
        model.eval()
        history.update(best_epoch=best_epoch, best_val_loss=best_loss, epochs_run=len(history["train_loss"]),
                       seconds=time.perf_counter() - start, device=str(self.device),
                       params=count_parameters(model), stopped_early=stopped_early, batch_size=batch_size,
                       seed=cfg.seed, pos_weight=self.pos_weight, compiled=cfg.compile, lr=cfg.lr,
                       warmup_steps=cfg.warmup_steps,
                       cuda_graph=self._graph is not None)
        self._graph = None  # frees the graph's memory pool
        return history

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.use_amp:
            # No weight-cast cache: graph capture needs it off, and each weight is cast once per step.
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def _mark_step(self) -> None:
        # CUDA-graph trees reuse output memory between replays; marking each step tells them that
        # the previous step's outputs (already consumed) may be overwritten.
        if self.train_config.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()

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
        self._mark_step()
        with self._autocast():
            logits = model(xb)  # (B,)
        logits = logits.float()  # (B,) the loss in fp32 under autocast
        loss_sum = (loss_fn(logits, yb) * weight).sum()  # () padding has weight 0
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / count).backward()
        optimizer.step()
        return loss_sum.detach(), logits.detach() > 0  # (), (B,)

    def _capture_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                      dev: DeviceWindows, batch_size: int) -> "GraphedStep | None":
        """Record one whole training step as a CUDA graph, or ``None`` (eager steps) if that fails.

        At batch 32 a step is ~200 tiny kernels: launching them from Python costs more than running
        them. Replaying one graph per step removes that. Warm-up steps (needed before capture) are
        undone afterwards, so training starts from the seeded init and a fresh optimizer.
        """
        saved = [p.detach().clone() for p in model.parameters()]
        try:
            return GraphedStep(lambda i, w, c: self._step(model, optimizer, loss_fn, dev, i, w, c),
                                dev.ends["train"][:1].expand(batch_size).clone(), self.device)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            log.warning("CUDA graph capture of the training step failed (%s); running eager steps", exc)
            return None
        finally:
            with torch.no_grad():
                for p, s in zip(model.parameters(), saved):
                    p.copy_(s)
                for state in optimizer.state.values():
                    for value in state.values():
                        if isinstance(value, torch.Tensor):
                            value.zero_()  # AdamW's fresh state: step 0, zero moments

    @torch.no_grad()
    def _eval_epoch(self, model: nn.Module, loss_fn: nn.Module, dev: DeviceWindows,
                    batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and predictions over a split, kept on the device."""
        model.eval()
        total = torch.zeros((), device=self.device)
        pred = torch.empty(batches.idx.numel(), dtype=torch.bool, device=self.device)
        for _, sl in batches:
            xb, yb = dev.gather(batches.idx[sl])  # (B, W, F), (B,)
            self._mark_step()
            with self._autocast():
                logits = model(xb)  # (B,)
            logits = logits.float()
            total += (loss_fn(logits, yb) * batches.weight[sl]).sum()
            pred[sl] = logits > 0
        return total, pred

    @staticmethod
    def _check_finite(train_loss_sum: float, val_loss_sum: float, epoch: int, step_loss: torch.Tensor,
                      batch_size: int) -> None:
        if not math.isfinite(train_loss_sum):
            # Failure path only: one more transfer to find the first bad step.
            bad = torch.nonzero(~torch.isfinite(step_loss)).flatten()
            step = int(bad[0]) + 1
            value = float(step_loss[step - 1])
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at epoch {epoch}, step {step} of {step_loss.numel()} "
                f"(batch size {batch_size}); check the input matrix for NaN/inf values and the learning rate")
        if not math.isfinite(val_loss_sum):
            raise NonFiniteLossError(f"non-finite validation loss ({val_loss_sum}) at epoch {epoch}; "
                                     f"check the val rows of the input matrix for NaN/inf values")


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
