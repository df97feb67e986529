"""K models of one architecture trained in one fused step: ``train_many``.

One PriceActionTransformer is far too small to fill a device: a batch-32 step is launch-bound.
Walk-forward folds, seed studies and hyper-parameter trials train several models of one shape,
so they run as one batched network (:class:`~patx_core.model.batched.BatchedTransformer`:
weights ``(K, ...)``, one ``baddbmm`` per layer for all K) with a stacked AdamW: every layer is
dispatched once for K models instead of K times for one.

What each model keeps of its own (nothing is exchanged between models; a test perturbs one
model's data and shows the others unchanged):

* its data and batch stream: its own window ends, shuffling generator and epoch length. All
  matrices live concatenated on the device and one gather serves every model; a model whose data
  ran out this step gets a padded batch of weight 0 and its update is masked;
* its own early stopping (patience on its own val loss) and best weights. A stopped model is
  frozen by masking its *update* (parameters, AdamW moments and step counter), not its gradient:
  with a zero gradient AdamW's momentum would keep moving it;
* its own lr, weight decay, linear warm-up, pos_weight, max_epochs and patience.

Dropout: the batched forward takes its masks as inputs. On CPU model k's masks are drawn from its
own generator — seeded exactly as ``Trainer`` seeds the global one, then advanced by the same
draws in the same order, shapes and memory layout as the native modules make them — so each model
sees exactly the dropout masks it would see alone. With that, and each model's arithmetic going
through the lone model's kernels (see :mod:`patx_core.model.batched` for why that matters under
Adam), a fused model's first-epoch losses equal the lone model's at baseline shapes to ~1e-6
(a test holds 1e-4). Later epochs can still drift apart as they do between two CPUs. On CUDA
the masks are one draw for all K models from the device generator (capturable in the CUDA
graph); ``Trainer`` on CUDA uses the fused dropout kernel's own stream, so there fused and alone
agree in distribution only.

Like ``Trainer``: the on-device gather by index arithmetic, padded fixed-shape batches, bf16
autocast on CUDA, one device→host transfer per epoch, and on CUDA the whole fused step (masks,
gather, forward, loss, backward, AdamW) captured once as a CUDA graph and replayed. On CPU a
model leaves the stack once it stopped, so a long-running fold does not pay for finished ones.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patx_core.data.windows import WindowedData
from patx_core.model.batched import BatchedTransformer, StackedAdamW, dropout_sites
from patx_core.model.device_step import GraphedStep, WarmUp
from patx_core.model.loop import (EarlyStopping, autocast, capture_step, check_finite, check_training_data,
                                  fit_with_oom_retry, resolve_device, resolve_pos_weight)
from patx_core.model.trainer import Trainer
from patx_core.model.transformer import PriceActionTransformer, count_parameters
from patx_core.settings.config import ModelConfig, TrainConfig

log = logging.getLogger(__name__)

#: ``on_epoch_end(model_index, epoch, metrics)``: ``Trainer``'s callback with the model's index.
ManyEpochCallback = Callable[[int, int, dict[str, float]], None]

#: Fewest models from which the fused step was measured faster than the same models one after
#: another, per device type (``python -m benchmarks fused``, rows in benchmarks/RESULTS.md); below
#: it, or where ``None``, ``train_many`` trains them one after another. A rule rather than a timing
#: taken at run time, so that the same inputs give the same results on every run.
#: CPU: on 2 idle cores (AMD EPYC), 20 steps per epoch, fused was 1.21x one after another at K = 2,
#: 1.13x at 4 and 1.21x at 8: the arithmetic is the same GEMMs, and what fusing saves is the
#: serial dropout-mask draws (K streams side by side) and the per-op overhead; K = 1 is the lone
#: model either way. CUDA: the single-model step is launch-bound (0.8 % of the H200's peak); its
#: row is pending in benchmarks/gpu_pending.sh.
FUSE_FROM_K: dict[str, int | None] = {"cpu": 2, "cuda": 2}

#: Environment override of that rule: "fused" or "sequential" (or "auto", the rule).
EXECUTOR_ENV = "PATX_TRAIN_MANY"

#: TrainConfig fields one fused step must share (one batch shape, one device, one precision).
SHARED_FIELDS = ("batch_size", "eval_batch_size", "device", "amp")


# --------------------------------------------------------------------------- the fused state

@dataclass
class _Member:
    """One model's fixed facts and its host-side bookkeeping."""

    config: TrainConfig
    data: WindowedData
    offset: int  # first row of its matrix in the concatenated device matrix
    train_ends: torch.Tensor  # (n,) device, rows of the concatenated matrix
    val_ends: torch.Tensor
    pos_weight: float | None
    shuffle_gen: torch.Generator
    dropout_gen: torch.Generator  # CPU: the global RNG state Trainer would have after init
    stopping: EarlyStopping  # its history, best epoch and patience
    best: dict[str, torch.Tensor] | None = None  # its best epoch's weights (device copies)
    warmup: WarmUp | None = None


# ------------------------------------------------------------------------------ the trainer

def _check(model_config: ModelConfig, train_configs: Sequence[TrainConfig], datas: Sequence[WindowedData]) -> None:
    if not train_configs:
        raise ValueError("train_many needs at least one model; got no TrainConfig")
    if len(train_configs) != len(datas):
        raise ValueError(f"train_many: {len(train_configs)} TrainConfigs but {len(datas)} WindowedData")
    for name in SHARED_FIELDS:
        values = sorted({repr(getattr(c, name)) for c in train_configs})
        if len(values) > 1:
            raise ValueError(f"train_many: TrainConfig.{name} must be the same for every fused model "
                             f"(one step shape and device); got {values}")
    for k, data in enumerate(datas):
        check_training_data(model_config, data, where=f"train_many: model {k}: ")


def train_many(model_config: ModelConfig, train_configs: Sequence[TrainConfig], datas: Sequence[WindowedData], *,
               on_epoch_end: ManyEpochCallback | None = None) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Train K models of ``model_config`` in one fused step, each on its own data and settings.

    Returns, per model, the module with its best epoch's weights (eval mode) and a history dict
    with ``Trainer.train()``'s keys (``epoch_seconds`` is the fused epoch's wall time, shared by
    the models that ran in it). ``train_configs`` may differ in lr, weight decay, warm-up,
    pos_weight, shuffle, seed, max_epochs and patience; :data:`SHARED_FIELDS` must agree.
    On CUDA out-of-memory the run is retried once at half the batch size, as ``Trainer`` does.

    Where fusing K models was measured slower than training them one after another on this kind
    of device (:func:`fuses`), they are trained one after another with ``Trainer``, and the log
    says so; the results are the lone models' (the fused ones equal them to float rounding).
    """
    _check(model_config, train_configs, datas)
    device = resolve_device(train_configs[0].device)
    if not fuses(device, len(train_configs)):
        log.info("train_many: training %d models one after another on %s: %s", len(train_configs), device.type,
                 "one model needs no fusing" if len(train_configs) == 1 else
                 f"fusing was measured slower there ({EXECUTOR_ENV}=fused overrides)")
        return _one_after_another(model_config, train_configs, datas, on_epoch_end)
    fused = _Fused(model_config, list(train_configs), list(datas), on_epoch_end)
    return fit_with_oom_retry(fused.fit, train_configs[0].batch_size, train_configs[0].eval_batch_size,
                              fused.device, where="train_many: ")


def fuses(device: torch.device, k: int) -> bool:
    """Whether ``train_many`` fuses ``k`` models on ``device``: :data:`FUSE_FROM_K`, unless
    :data:`EXECUTOR_ENV` says ``fused`` or ``sequential``."""
    choice = os.environ.get(EXECUTOR_ENV, "auto")
    if choice not in ("auto", "fused", "sequential"):
        raise ValueError(f'{EXECUTOR_ENV}={choice!r}; expected "auto", "fused" or "sequential"')
    if choice != "auto":
        return choice == "fused"
    smallest = FUSE_FROM_K.get(device.type)
    return smallest is not None and k >= smallest


def _one_after_another(model_config: ModelConfig, train_configs: Sequence[TrainConfig],
                       datas: Sequence[WindowedData],
                       on_epoch_end: ManyEpochCallback | None) -> list[tuple[nn.Module, dict[str, Any]]]:
    out = []
    for k, (config, data) in enumerate(zip(train_configs, datas)):
        callback = None if on_epoch_end is None else functools.partial(on_epoch_end, k)
        trainer = Trainer(model_config, config, data, on_epoch_end=callback)
        history = trainer.train()
        out.append((trainer.model, history))
    return out


class _Fused:
    def __init__(self, model_config: ModelConfig, configs: list[TrainConfig], datas: list[WindowedData],
                 on_epoch_end: ManyEpochCallback | None) -> None:
        self.model_config, self.configs, self.datas = model_config, configs, datas
        self.on_epoch_end = on_epoch_end
        self.device = resolve_device(configs[0].device)
        self.use_amp = configs[0].amp and self.device.type == "cuda"
        offsets = np.cumsum([0] + [d.matrix.shape[0] for d in datas])
        self.offsets = [int(o) for o in offsets[:-1]]
        # One matrix and label vector for every model: one gather per step serves all of them.
        self.x = torch.from_numpy(np.concatenate([d.matrix for d in datas])).to(self.device)  # (ΣN, F)
        self.y = torch.from_numpy(np.concatenate([d.labels for d in datas])).to(self.device)  # (ΣN,)
        self.window_offsets = torch.arange(-(model_config.window_size - 1), 1, device=self.device)  # (W,)
        self.pool: ThreadPoolExecutor | None = None  # CPU: draws the models' dropout masks side by side

    # -- setup ----------------------------------------------------------------------------------

    def _members(self) -> tuple[list[_Member], list[nn.Module]]:
        members, modules = [], []
        for cfg, data, offset in zip(self.configs, self.datas, self.offsets):
            # Trainer's seeding: the global RNG inits the model (and then drives dropout), a private
            # generator shuffles. The dropout generator takes over the global state after init.
            torch.manual_seed(cfg.seed)
            modules.append(PriceActionTransformer(self.model_config))
            dropout_gen = torch.Generator()
            dropout_gen.set_state(torch.get_rng_state())
            members.append(_Member(
                config=cfg, data=data, offset=offset,
                train_ends=torch.from_numpy(data.ends["train"] + offset).to(self.device),
                val_ends=torch.from_numpy(data.ends["val"] + offset).to(self.device),
                pos_weight=resolve_pos_weight(cfg.pos_weight, data.split_labels("train")),
                shuffle_gen=torch.Generator().manual_seed(cfg.seed), dropout_gen=dropout_gen,
                stopping=EarlyStopping(cfg, log, where=f"model {len(members)}: ")))
        return members, modules

    @staticmethod
    def _pad(ends: list[torch.Tensor], batch: int, steps: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows (K, steps*B), weights (K, steps*B) and real counts (K, steps) of K padded streams.

        Past a model's own end its rows repeat its first row at weight 0 and its count is 1 (the
        step's loss is then 0 and its update masked).
        """
        k = len(ends)
        idx = torch.empty(k, steps * batch, dtype=torch.int64, device=device)
        weight = torch.zeros(k, steps * batch, device=device)
        count = torch.ones(k, steps, device=device)
        for j, e in enumerate(ends):
            n = e.numel()
            idx[j, :n] = e
            idx[j, n:] = e[0]
            weight[j, :n] = 1.0
            full, rest = divmod(n, batch)
            count[j, :full] = float(batch)
            if rest:
                count[j, full] = float(rest)
        return idx, weight, count

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B) rows of the concatenated matrix → windows (K, B, W, F) and labels (K, B)."""
        return self.x[idx.unsqueeze(-1) + self.window_offsets], self.y[idx]

    # -- the step ---------------------------------------------------------------------------------

    def _losses(self, run: "_Run", xb: torch.Tensor, yb: torch.Tensor, weight: torch.Tensor,
                masks: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-model summed loss (K,) and fp32 logits (K, B) of one batch."""
        with autocast(self.use_amp):
            logits = run.net(xb, masks)  # (K, B)
        logits = logits.float()  # the loss in fp32 under autocast, as Trainer
        loss = F.binary_cross_entropy_with_logits(logits, yb, reduction="none", pos_weight=run.pos_weight)
        return (loss * weight).sum(1), logits  # (K,), (K, B)

    def _draw_masks(self, run: "_Run", active: list[bool] | None,
                    buffers: list[torch.Tensor]) -> list[torch.Tensor]:
        """This step's dropout masks, scaled by 1 / (1 - p), one (K, ...) tensor per site (in place)."""
        p = self.model_config.dropout
        if not buffers:
            return []
        if self.device.type == "cpu":
            assert active is not None

            def draw(j: int) -> None:
                gen = run.members[run.slots[j]].dropout_gen
                for buf in buffers:
                    if active[j]:  # the draws Trainer alone would make, from this model's stream
                        buf[j].bernoulli_(1.0 - p, generator=gen)
                    else:  # no draw: a model without a batch this step leaves its stream alone
                        buf[j].fill_(1.0 - p)

            # torch's CPU bernoulli_ is one serial loop over its generator (about a quarter of a
            # baseline step), so the models' independent streams are drawn side by side, one
            # thread per core; each stream still sees its draws in the lone model's order.
            if self.pool is not None and len(run.slots) > 1:
                list(self.pool.map(draw, range(len(run.slots))))
            else:
                for j in range(len(run.slots)):
                    draw(j)
        else:
            for buf in buffers:
                buf.bernoulli_(1.0 - p)  # one draw for all models; capturable
        return [buf.div_(1.0 - p) for buf in buffers]  # native dropout's scaling, same rounding

    def _step(self, run: "_Run", buffers: list[torch.Tensor], idx: torch.Tensor, weight: torch.Tensor,
              count: torch.Tensor, active: torch.Tensor,
              active_host: list[bool] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks, gather, forward, loss, backward, AdamW for every model: (K,) loss sums, (K, B) preds."""
        masks = self._draw_masks(run, active_host, buffers)
        xb, yb = self._gather(idx)
        loss_sum, logits = self._losses(run, xb, yb, weight, masks)
        for p in run.net.stacked:
            p.grad = None
        (loss_sum / count).sum().backward()  # models share no parameter: each gets its own gradient
        run.opt.step(active, active_host)
        return loss_sum.detach(), logits.detach() > 0

    # -- one run ------------------------------------------------------------------------------------

    def fit(self, batch: int, eval_batch: int) -> list[tuple[nn.Module, dict[str, Any]]]:
        workers = min(len(self.configs), torch.get_num_threads())
        if self.device.type != "cpu" or workers < 2:
            return self._fit(batch, eval_batch)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="patx-dropout") as self.pool:
            try:
                return self._fit(batch, eval_batch)
            finally:
                self.pool = None

    def _fit(self, batch: int, eval_batch: int) -> list[tuple[nn.Module, dict[str, Any]]]:
        start = time.perf_counter()
        members, modules = self._members()
        run = _Run(self.model_config, members, modules, self.device)
        sites = dropout_sites(self.model_config, batch)
        graph: GraphedStep | None = None
        if self.device.type == "cuda":
            graph = self._capture(run, sites, batch)
        val_idx, val_weight, _ = self._pad([m.val_ends for m in members],
                                           eval_batch, max(math.ceil(m.val_ends.numel() / eval_batch)
                                                           for m in members), self.device)
        max_epochs = max(m.config.max_epochs for m in members)
        for epoch in range(1, max_epochs + 1):
            epoch_start = time.perf_counter()
            if self.device.type == "cpu" and len(run.slots) > sum(members[s].stopping.running for s in run.slots):
                run.keep([j for j, s in enumerate(run.slots) if members[s].stopping.running])
            rows = run.slots
            orders = []
            for s in rows:
                m = members[s]
                ends = m.train_ends
                if m.config.shuffle:
                    ends = ends[torch.randperm(ends.numel(), generator=m.shuffle_gen).to(self.device)]
                orders.append(ends)
            own_steps = [math.ceil(o.numel() / batch) for o in orders]
            n_steps = max(own_steps)
            idx, weight, count = self._pad(orders, batch, n_steps, self.device)
            running = [members[s].stopping.running for s in rows]
            step_loss, pred = self._train_epoch(run, sites, graph, idx, weight, count, own_steps, running, batch)
            val_loss, val_pred = self._eval_epoch(run, val_idx, val_weight, eval_batch, rows)
            real = weight > 0
            stats = torch.cat([step_loss.sum(1, keepdim=True), self._confusion(pred, self.y[idx], real),
                               val_loss.unsqueeze(1),
                               self._confusion(val_pred, self.y[val_idx[rows]], val_weight[rows] > 0)],
                              dim=1).tolist()  # the epoch's single device→host transfer
            seconds = time.perf_counter() - epoch_start
            for j, s in enumerate(rows):
                if running[j]:
                    self._end_epoch(s, members[s], run, j, epoch, stats[j], orders[j].numel(),
                                    members[s].val_ends.numel(), seconds, step_loss[j], batch)
            if not any(m.stopping.running for m in members):
                break
        out = []
        for member, module in zip(members, modules):
            assert member.best is not None  # the first epoch always improves on +inf (finite checked)
            module = module.to(self.device)
            module.load_state_dict(member.best, strict=True)
            module.eval()
            out.append((module, member.stopping.finish(
                seconds=time.perf_counter() - start, device=str(self.device), params=count_parameters(module),
                batch_size=batch, pos_weight=member.pos_weight, compiled=False, cuda_graph=graph is not None)))
        return out

    def _train_epoch(self, run: "_Run", sites: list[tuple[int, ...]], graph: GraphedStep | None, idx: torch.Tensor,
                     weight: torch.Tensor, count: torch.Tensor, own_steps: list[int], running: list[bool],
                     batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the longest stream; nothing here waits for the device."""
        k = len(run.slots)
        n_steps = count.shape[1]
        buffers = [torch.empty((k, *shape), device=self.device) for shape in sites]
        step_loss = torch.zeros(k, n_steps, device=self.device)
        pred = torch.empty(k, n_steps * batch, dtype=torch.bool, device=self.device)
        # Which rows take a step, known on the host: their own stream not exhausted and not stopped.
        active_host = [[running[j] and s < own_steps[j] for j in range(k)] for s in range(n_steps)]
        active = torch.tensor(active_host, device=self.device)  # (steps, K)
        for s in range(n_steps):
            sl = slice(s * batch, (s + 1) * batch)
            for j, member in enumerate(run.slots):
                warmup = run.members[member].warmup
                if active_host[s][j] and warmup is not None:
                    warmup.before_step()
            if graph is not None:
                loss_sum, step_pred = graph.replay(idx[:, sl], weight[:, sl], count[:, s], active[s])
            else:
                loss_sum, step_pred = self._step(run, buffers, idx[:, sl], weight[:, sl], count[:, s],
                                                 active[s], active_host[s])
            step_loss[:, s] = loss_sum
            pred[:, sl] = step_pred
        return step_loss, pred

    @torch.no_grad()
    def _eval_epoch(self, run: "_Run", idx: torch.Tensor, weight: torch.Tensor, batch: int,
                    rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each running model's summed val loss (K,) and predictions (K, steps*B), on the device."""
        idx, weight = idx[rows], weight[rows]
        total = torch.zeros(len(rows), device=self.device)
        pred = torch.empty(idx.shape, dtype=torch.bool, device=self.device)
        for start in range(0, idx.shape[1], batch):
            sl = slice(start, start + batch)
            xb, yb = self._gather(idx[:, sl])
            loss_sum, logits = self._losses(run, xb, yb, weight[:, sl], None)
            total += loss_sum
            pred[:, sl] = logits > 0
        return total, pred

    @staticmethod
    def _confusion(pred: torch.Tensor, target: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(true positives, predicted positives, actual positives) per model over its real samples: (K, 3)."""
        t = (target > 0.5) & real
        p = pred & real
        return torch.stack([(p & t).sum(1), p.sum(1), t.sum(1)], dim=1).float()

    def _end_epoch(self, k: int, member: _Member, run: "_Run", row: int, epoch: int, stats: list[float],
                   n_train: int, n_val: int, seconds: float, step_loss: torch.Tensor, batch: int) -> None:
        where = f"train_many: model {k}: "
        check_finite(stats[0], stats[4], epoch, step_loss, batch, where=where)
        callback = None if self.on_epoch_end is None else lambda e, m: self.on_epoch_end(k, e, m)  # type: ignore[misc]
        if member.stopping.end_epoch(epoch, stats, n_train, n_val, seconds, callback):
            member.best = run.net.state_dict_of(row)  # device copies: no sync

    def _capture(self, run: "_Run", sites: list[tuple[int, ...]], batch: int) -> GraphedStep | None:
        """The fused step (masks, gather, forward, loss, backward, AdamW) as a CUDA graph, or ``None``."""
        k = len(run.slots)
        saved = [p.detach().clone() for p in run.net.stacked]

        @torch.no_grad()
        def restore() -> None:  # the seeded inits and a fresh optimizer
            for p, s in zip(run.net.stacked, saved):
                p.copy_(s)
            run.opt.reset()

        buffers = [torch.empty((k, *shape), device=self.device) for shape in sites]
        idx = torch.stack([m.train_ends[:1].expand(batch) for m in run.members])  # (K, B)
        inputs = (idx, torch.ones(k, batch, device=self.device), torch.full((k,), float(batch), device=self.device),
                  torch.ones(k, dtype=torch.bool, device=self.device))
        return capture_step(lambda i, w, c, a: self._step(run, buffers, i, w, c, a, None), inputs, self.device,
                            restore=restore, where="train_many: ")


class _Run:
    """The running models of one fused run: their batched network, optimizer and pos_weights.

    ``slots[j]`` is the member index of row ``j``; rows are dropped when their model stops
    (CPU only: a captured CUDA graph keeps its shapes, and there a stopped row stays masked).
    """

    def __init__(self, model_config: ModelConfig, members: list[_Member], modules: list[nn.Module],
                 device: torch.device) -> None:
        self.members = members
        self.net = BatchedTransformer(model_config, modules).to(device)  # type: ignore[arg-type]
        self.opt = StackedAdamW(self.net, [m.config.lr for m in members],
                                [m.config.weight_decay for m in members],
                                tensor_lr=[m.config.warmup_steps > 0 for m in members])
        for member, group in zip(members, self.opt.groups):
            if member.config.warmup_steps:
                member.warmup = WarmUp(group, member.config.lr, member.config.warmup_steps)  # type: ignore[arg-type]
        pws = [m.pos_weight for m in members]
        self.pos_weight = (None if all(p is None for p in pws) else
                           torch.tensor([[1.0 if p is None else p] for p in pws], device=device))  # (K, 1)
        self.slots = list(range(len(members)))

    def keep(self, rows: list[int]) -> None:
        """Only these rows stay (their AdamW state with them)."""
        self.net.keep(rows)
        self.opt.keep(rows)
        if self.pos_weight is not None:
            self.pos_weight = self.pos_weight[rows]
        self.slots = [self.slots[r] for r in rows]
