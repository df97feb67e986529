"""The training recipe's rules, written once for one model (``Trainer``) and K fused ones (``train_many``).

The two drivers differ only in the shape of a step (one ``nn.Module`` and ``torch.optim.AdamW``,
or K models as one batched network); what a training run *means* is here:

* :func:`fit_with_oom_retry` — where every fit starts: on the CPU freed memory stays in the heap
  (:mod:`~patx_core.model.heap`); on CUDA out-of-memory, one retry at half the batch size;
* :func:`check_finite` — a NaN/inf epoch loss fails, located to its first bad step;
* :class:`EarlyStopping` — a model's history, its best epoch, patience and ``max_epochs``;
* :func:`capture_step` — the step recorded as a CUDA graph, warm-up steps undone, eager on failure;
* :func:`autocast` — bf16 on CUDA when ``amp``; fp32 elsewhere.

The lr warm-up both read is :class:`~patx_core.model.device_step.WarmUp`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from patx_core.data.windows import WindowedData
from patx_core.model.device_step import GraphedStep
from patx_core.model.heap import keep_freed_memory
from patx_core.settings.config import ModelConfig, TrainConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
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


def autocast(use_amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``use_amp``; otherwise nothing (fp32)."""
    if use_amp:
        # No weight-cast cache: graph capture needs it off, and each weight is cast once per step.
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def fit_with_oom_retry(fit: Callable[[int, int], T], batch: int, eval_batch: int, device: torch.device, *,
                       where: str = "") -> T:
    """``fit(batch, eval_batch)``; on CUDA out-of-memory, once more at half of both."""
    if device.type == "cpu":
        keep_freed_memory()  # a step's activations reuse the last step's pages instead of faulting new ones
    try:
        return fit(batch, eval_batch)
    except torch.cuda.OutOfMemoryError as exc:
        if batch < 2:
            raise RuntimeError(f"{where}CUDA out of memory at batch size {batch}; nothing smaller to try") from exc
        log.warning("%sCUDA out of memory at batch size %d (%s); retrying once at batch size %d", where,
                    batch, str(exc).splitlines()[0] if str(exc) else "OOM", batch // 2)
    # Retried outside the except block so the failed attempt's frames (and tensors) are freed.
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        return fit(batch // 2, max(1, eval_batch // 2))
    except torch.cuda.OutOfMemoryError as exc:
        fewer = ", fuse fewer models" if where else ""  # a fused run names itself in `where`
        raise RuntimeError(f"{where}CUDA out of memory at batch size {batch} and again at the retry with "
                           f"{batch // 2}; lower TrainConfig.batch_size / eval_batch_size{fewer} or free "
                           f"GPU memory") from exc


def check_finite(train_loss_sum: float, val_loss_sum: float, epoch: int, step_loss: torch.Tensor, batch_size: int,
                 *, where: str = "") -> None:
    """Raise :class:`NonFiniteLossError` for a NaN/inf epoch loss, naming the first bad training step."""
    if not math.isfinite(train_loss_sum):
        # Failure path only: one more transfer to find the first bad step.
        bad = torch.nonzero(~torch.isfinite(step_loss)).flatten()
        step = int(bad[0]) + 1
        value = float(step_loss[step - 1])
        raise NonFiniteLossError(
            f"{where}non-finite training loss ({value}) at epoch {epoch}, step {step} of {step_loss.numel()} "
            f"(batch size {batch_size}); check the input matrix for NaN/inf values and the learning rate")
    if not math.isfinite(val_loss_sum):
        raise NonFiniteLossError(f"{where}non-finite validation loss ({val_loss_sum}) at epoch {epoch}; "
                                 f"check the val rows of the input matrix for NaN/inf values")


class EarlyStopping:
    """One model's history, best epoch and stopping rule (patience on val loss, or ``max_epochs``).

    ``where`` prefixes its log lines (``"model 2: "`` in a fused run); ``logger`` is the driver's,
    so a caller filtering on ``patx_core.model.trainer`` still sees a lone model's epochs.
    """

    def __init__(self, config: TrainConfig, logger: logging.Logger, *, where: str = "") -> None:
        self.config, self.log, self.where = config, logger, where
        self.history: dict[str, Any] = {f"{s}_{m}": [] for s in ("train", "val") for m in METRIC_NAMES}
        self.history["epoch_seconds"] = []
        self.best_loss, self.best_epoch, self.wait = math.inf, 0, 0
        self.running, self.stopped_early = True, False

    def end_epoch(self, epoch: int, stats: list[float], n_train: int, n_val: int, seconds: float,
                  on_epoch_end: EpochCallback | None = None) -> bool:
        """Record an epoch from its transferred ``stats`` (train loss sum and confusion counts, then
        val's); returns whether it is the best so far (the caller keeps those weights)."""
        tr, va = _metrics(*stats[:4], n_train), _metrics(*stats[4:], n_val)
        h = self.history
        for m in METRIC_NAMES:
            h[f"train_{m}"].append(tr[m])
            h[f"val_{m}"].append(va[m])
        h["epoch_seconds"].append(seconds)
        improved = va["loss"] < self.best_loss
        self.log.info("%sEpoch [%d/%d]", self.where, epoch, self.config.max_epochs)
        self.log.info("%sTrain Loss: %.4f | Acc: %.4f | F1: %.4f", self.where, tr["loss"], tr["accuracy"], tr["f1"])
        self.log.info("%sVal Loss: %.4f | Acc: %.4f | F1: %.4f", self.where, va["loss"], va["accuracy"], va["f1"])
        if improved:
            self.best_loss, self.best_epoch, self.wait = va["loss"], epoch, 0
            self.log.info("%sNew best val loss %.4f at epoch %d; weights kept in memory", self.where, va["loss"], epoch)
        else:
            self.wait += 1
        if on_epoch_end is not None:
            metrics = {f"train_{m}": tr[m] for m in METRIC_NAMES} | {f"val_{m}": va[m] for m in METRIC_NAMES}
            metrics |= {"epoch_seconds": seconds, "best_val_loss": self.best_loss, "is_best": float(improved)}
            on_epoch_end(epoch, metrics)
        if self.wait >= self.config.patience:
            self.running, self.stopped_early = False, True
            self.log.info("%sEarly stopping: val loss has not improved for %d epochs (best %.4f at epoch %d)",
                          self.where, self.config.patience, self.best_loss, self.best_epoch)
        elif epoch >= self.config.max_epochs:
            self.running = False
        return improved

    def finish(self, **facts: Any) -> dict[str, Any]:
        """The history dict ``Trainer.train()`` documents, with the run's ``facts`` (device, seconds, …)."""
        cfg, h = self.config, self.history
        h.update(best_epoch=self.best_epoch, best_val_loss=self.best_loss, epochs_run=len(h["train_loss"]),
                 stopped_early=self.stopped_early, seed=cfg.seed, lr=cfg.lr, warmup_steps=cfg.warmup_steps, **facts)
        return h


def capture_step(step: Callable[..., tuple[torch.Tensor, torch.Tensor]], inputs: tuple[torch.Tensor, ...],
                 device: torch.device, *, restore: Callable[[], None], where: str = "") -> GraphedStep | None:
    """Record ``step`` as a CUDA graph, or ``None`` (eager steps) if capture fails.

    At batch 32 a step is ~200 tiny kernels: launching them from Python costs more than running
    them, and replaying one graph per step removes that. The warm-up steps capture needs train
    the model; ``restore`` undoes them (initial weights, fresh optimizer state) in every case.
    """
    try:
        return GraphedStep(step, inputs, device)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        log.warning("%sCUDA graph capture of the training step failed (%s); running eager steps", where, exc)
        return None
    finally:
        restore()
