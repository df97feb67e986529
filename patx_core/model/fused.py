"""K models of one architecture trained in one fused step: ``train_many``.

One PriceActionTransformer is far too small to fill a device: a batch-32 step is launch-bound.
Walk-forward folds, seed studies and hyper-parameter trials train several models of one shape,
so their parameters are stacked (``torch.func.stack_module_state``) into one ``(K, P)`` buffer
and a single ``vmap``-ped step trains all of them: every kernel runs once over K models instead
of K times over one.

What each model keeps of its own (nothing is exchanged between models; a test perturbs one
model's data and shows the others unchanged):

* its data and batch stream: its own window ends, shuffling generator and epoch length. All
  matrices live concatenated on the device and one gather serves every model; a model whose data
  ran out this step gets a padded batch of weight 0 and its update is masked;
* its own early stopping (patience on its own val loss) and best weights. A stopped model is
  frozen by masking its *update* (parameters, AdamW moments and step counter), not its gradient:
  with a zero gradient AdamW's momentum would keep moving it;
* its own lr, weight decay, linear warm-up, pos_weight, max_epochs and patience.

Dropout, and why the masks are drawn outside ``vmap``: inside ``vmap(randomness="different")``
one call draws the masks of all K models from the one global generator, so model k's masks can
never equal those that ``Trainer`` alone draws after ``torch.manual_seed(seed_k)``, and the
fused numbers would only match the unfused ones in distribution. Instead the step runs an
explicit forward (:func:`masked_forward`: the same layers as ``PriceActionTransformer``, same
parameter names) whose dropout masks are inputs. On CPU model k's masks are drawn from its own
generator — seeded exactly as ``Trainer`` seeds the global one, then advanced by the same draws
in the same order, shapes and memory layout as the native modules make them — so each model
sees exactly the dropout masks it would see alone, and ``vmap`` runs with
``randomness="error"`` (no hidden random op). What remains between fused and alone is float
rounding of batched against single kernels (and of this AdamW against torch's fused one): the
first steps agree bit for bit, then ~1e-7 apart. Training can amplify that: on the tests' small
data per-epoch losses stay ~1e-6 relative apart (the tests hold 1e-4), but on the bundled NASDAQ
sample with ``smoke`` one walk-forward fold drifted to 1e-3 within its first epoch and another
stopped two epochs earlier — the same thing a different thread count or CPU does to ``Trainer``. On CUDA the masks are one draw for
all K models from the device generator (capturable in the CUDA graph); ``Trainer`` on CUDA uses
the fused dropout kernel's own stream, so there fused and alone agree in distribution only.

Like ``Trainer``: the on-device gather by index arithmetic, padded fixed-shape batches, bf16
autocast on CUDA, one device→host transfer per epoch, and on CUDA the whole fused step (masks,
gather, forward, loss, backward, AdamW) captured once as a CUDA graph and replayed. On CPU a
model leaves the stack once it stopped, so a long-running fold does not pay for finished ones.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import stack_module_state, vmap

from patx_core.data.windows import WindowedData
from patx_core.model.trainer import (
    check_training_data,
    METRIC_NAMES,
    NonFiniteLossError,
    _metrics,
    resolve_device,
    resolve_pos_weight,
)
from patx_core.model.transformer import PriceActionTransformer, count_parameters
from patx_core.settings.config import ModelConfig, TrainConfig

log = logging.getLogger(__name__)

#: ``on_epoch_end(model_index, epoch, metrics)``: ``Trainer``'s callback with the model's index.
ManyEpochCallback = Callable[[int, int, dict[str, float]], None]

#: TrainConfig fields one fused step must share (one batch shape, one device, one precision).
SHARED_FIELDS = ("batch_size", "eval_batch_size", "device", "amp")

# torch.optim.AdamW's defaults, which Trainer uses.
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
_LN_EPS = 1e-5  # nn.TransformerEncoderLayer's layer_norm_eps


# ------------------------------------------------------------------------------ the forward

def _dropout_sites(config: ModelConfig, batch: int) -> list[tuple[int, ...]]:
    """Shapes of the dropout masks of one training forward, in the order the native modules draw.

    Per encoder layer: attention weights (B, H, W, W); after the attention block (drawn as
    (W, B, C): MultiheadAttention hands back a batch-second tensor, and the mask follows its
    memory layout); inside the feed-forward (B, W, d_ff); after it (B, W, C). Then the head's
    (B, head_hidden). No masks at ``dropout == 0`` (the native modules draw none either).
    """
    if config.dropout == 0:
        return []
    b, w, c = batch, config.window_size, config.d_model
    layer = [(b, config.n_heads, w, w), (w, b, c), (b, w, config.d_ff), (b, w, c)]
    return layer * config.n_layers + [(b, config.head_hidden)]


def _site_view(mask: torch.Tensor, site: int) -> torch.Tensor:
    """A drawn mask in the layout the forward multiplies by (the second site is drawn (W, B, C))."""
    return mask.transpose(0, 1) if site % 4 == 1 and mask.dim() == 3 else mask


def masked_forward(params: dict[str, torch.Tensor], pe: torch.Tensor, x: torch.Tensor,
                   masks: Sequence[torch.Tensor] | None, config: ModelConfig) -> torch.Tensor:
    """``PriceActionTransformer.forward`` written out, dropout by the given (already scaled) masks.

    ``params`` has the module's parameter names; ``pe`` is its positional-encoding buffer; ``masks``
    follows :func:`_dropout_sites` (``None``: no dropout, the eval forward). With the masks the
    native modules would draw, the result equals the module's training forward on CPU to float
    rounding (~1e-7: the GEMMs see differently laid-out inputs; a test pins it); without masks,
    its eval forward. (B, W, F) → (B,) logits.
    """
    b, w, _ = x.shape
    c, heads = config.d_model, config.n_heads
    hd = c // heads
    scale = 1.0 / math.sqrt(math.sqrt(hd))  # SDPA's math path scales q and k by sqrt(scale) each
    site = iter(range(len(masks))) if masks else None

    def drop(t: torch.Tensor) -> torch.Tensor:
        if site is None:
            return t
        i = next(site)
        return t * _site_view(masks[i], i)  # type: ignore[index]

    h = F.linear(x, params["input_proj.weight"], params["input_proj.bias"]) + pe[:, :w]
    for layer in range(config.n_layers):
        p = f"encoder.layers.{layer}."
        qkv = F.linear(h, params[p + "self_attn.in_proj_weight"], params[p + "self_attn.in_proj_bias"])
        q, k, v = qkv.view(b, w, 3, heads, hd).permute(2, 0, 3, 1, 4)  # 3 × (B, H, W, hd)
        attn = drop(torch.softmax((q * scale) @ (k * scale).transpose(-2, -1), dim=-1))  # (B, H, W, W)
        o = (attn @ v).permute(0, 2, 1, 3).reshape(b, w, c)  # (B, W, C)
        o = drop(F.linear(o, params[p + "self_attn.out_proj.weight"], params[p + "self_attn.out_proj.bias"]))
        h = F.layer_norm(h + o, (c,), params[p + "norm1.weight"], params[p + "norm1.bias"], _LN_EPS)
        f = drop(F.relu(F.linear(h, params[p + "linear1.weight"], params[p + "linear1.bias"])))
        f = drop(F.linear(f, params[p + "linear2.weight"], params[p + "linear2.bias"]))
        h = F.layer_norm(h + f, (c,), params[p + "norm2.weight"], params[p + "norm2.bias"], _LN_EPS)
    h = h.mean(dim=1)  # (B, C)
    h = drop(F.relu(F.linear(h, params["head.0.weight"], params["head.0.bias"])))
    return F.linear(h, params["head.3.weight"], params["head.3.bias"]).squeeze(-1)  # (B,)


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
    history: dict[str, Any]
    best_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    running: bool = True
    stopped_early: bool = False


class _Stack:
    """The running models' parameters and AdamW state as ``(K, P)`` device tensors.

    ``slots[j]`` is the member index of row ``j``; rows are dropped when their model stops
    (CPU only: a captured CUDA graph keeps its shapes, and there a stopped row stays masked).
    """

    def __init__(self, modules: list[nn.Module], members: list[_Member], device: torch.device) -> None:
        params, _ = stack_module_state(modules)  # name -> (K, *shape)
        self.names = list(params)
        self.shapes = [tuple(params[n].shape[1:]) for n in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.flat = torch.cat([params[n].detach().reshape(len(modules), -1) for n in self.names], dim=1)
        self.flat = self.flat.to(device).requires_grad_(True)  # (K, P)
        self.exp_avg = torch.zeros_like(self.flat, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(self.flat, requires_grad=False)
        k = len(modules)
        self.steps = torch.zeros(k, dtype=torch.float64, device=device)  # optimizer steps taken
        self.lr = torch.tensor([m.config.lr for m in members], dtype=torch.float64, device=device)
        self.wd = torch.tensor([m.config.weight_decay for m in members], dtype=torch.float64, device=device)
        self.warmup = torch.tensor([m.config.warmup_steps for m in members], dtype=torch.float64, device=device)
        pws = [m.pos_weight for m in members]
        self.pos_weight = (None if all(p is None for p in pws) else
                           torch.tensor([1.0 if p is None else p for p in pws], device=device))
        self.best = self.flat.detach().clone()  # (K, P) each model's best weights (rows by member)
        self.slots = list(range(k))

    def params(self) -> dict[str, torch.Tensor]:
        """Name → (K, *shape) views into the flat buffer (rebuilt per step: cheap, graph-safe)."""
        out, start = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = self.flat[:, start:start + size].view(self.flat.shape[0], *shape)
            start += size
        return out

    def keep(self, rows: list[int]) -> None:
        """Only these rows stay in the stack (their AdamW state with them)."""
        index = torch.tensor(rows, device=self.flat.device)
        with torch.no_grad():
            self.flat = self.flat.detach()[index].clone().requires_grad_(True)
        for name in ("exp_avg", "exp_avg_sq", "steps", "lr", "wd", "warmup"):
            setattr(self, name, getattr(self, name)[index].clone())
        if self.pos_weight is not None:
            self.pos_weight = self.pos_weight[index].clone()
        self.slots = [self.slots[r] for r in rows]

    @torch.no_grad()
    def adamw(self, active: torch.Tensor) -> None:
        """One AdamW step (torch's decoupled weight decay and bias correction) where ``active``.

        Inactive rows keep parameters, moments and step count bit for bit: their update is masked,
        not their gradient, so momentum cannot move a stopped (or out-of-data) model.
        """
        grad = self.flat.grad
        a = active.unsqueeze(1)  # (K, 1)
        steps = self.steps + active.double()  # (K,)
        # Trainer's warm-up: optimizer step k runs at lr * min(1, k / warmup_steps), in float64.
        ramp = torch.where(self.warmup > 0, torch.clamp(steps / self.warmup.clamp(min=1), max=1.0),
                           torch.ones_like(steps))
        lr = self.lr * ramp
        decay = (1.0 - lr * self.wd).float().unsqueeze(1)
        step_size = (lr / (1.0 - _BETA1 ** steps)).float().unsqueeze(1)
        bc2_sqrt = torch.sqrt(1.0 - _BETA2 ** steps).float().unsqueeze(1)
        m = self.exp_avg.lerp(grad, 1.0 - _BETA1)
        v = self.exp_avg_sq * _BETA2 + (1.0 - _BETA2) * grad * grad
        new = self.flat * decay - step_size * m / (v.sqrt() / bc2_sqrt + _EPS)
        self.flat.copy_(torch.where(a, new, self.flat))
        self.exp_avg.copy_(torch.where(a, m, self.exp_avg))
        self.exp_avg_sq.copy_(torch.where(a, v, self.exp_avg_sq))
        self.steps.copy_(steps)


class _Graph:
    """The fused training step captured as one CUDA graph over static input tensors."""

    WARMUP_STEPS = 3  # side-stream iterations before capture (cuBLAS workspaces, allocator)

    def __init__(self, step: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                 inputs: tuple[torch.Tensor, ...], device: torch.device) -> None:
        self.inputs = tuple(t.clone() for t in inputs)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_STEPS):
                step(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = step(*self.inputs)

    def replay(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for static, new in zip(self.inputs, inputs):
            static.copy_(new)
        self.graph.replay()
        return self.outputs


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
    ``torch.compile`` settings are not applied (the fused step has its own CUDA graph).
    On CUDA out-of-memory the run is retried once at half the batch size, as ``Trainer`` does.
    """
    _check(model_config, train_configs, datas)
    fused = _Fused(model_config, list(train_configs), list(datas), on_epoch_end)
    batch, eval_batch = train_configs[0].batch_size, train_configs[0].eval_batch_size
    try:
        return fused.fit(batch, eval_batch)
    except torch.cuda.OutOfMemoryError as exc:
        if batch < 2:
            raise RuntimeError(f"CUDA out of memory at batch size {batch}; nothing smaller to try") from exc
        log.warning("train_many: CUDA out of memory at batch size %d; retrying once at %d", batch, batch // 2)
    torch.cuda.empty_cache()
    try:
        return fused.fit(batch // 2, max(1, eval_batch // 2))
    except torch.cuda.OutOfMemoryError as exc:
        raise RuntimeError(f"train_many: CUDA out of memory at batch size {batch} and again at {batch // 2}; "
                           f"fuse fewer models or lower TrainConfig.batch_size / eval_batch_size") from exc


class _Fused:
    def __init__(self, model_config: ModelConfig, configs: list[TrainConfig], datas: list[WindowedData],
                 on_epoch_end: ManyEpochCallback | None) -> None:
        self.model_config, self.configs, self.datas = model_config, configs, datas
        self.on_epoch_end = on_epoch_end
        self.device = resolve_device(configs[0].device)
        self.use_amp = configs[0].amp and self.device.type == "cuda"
        if any(c.compile for c in configs):
            log.info("train_many: TrainConfig.compile is not applied to the fused step (it has its own CUDA graph)")
        offsets = np.cumsum([0] + [d.matrix.shape[0] for d in datas])
        self.offsets = [int(o) for o in offsets[:-1]]
        # One matrix and label vector for every model: one gather per step serves all of them.
        self.x = torch.from_numpy(np.concatenate([d.matrix for d in datas])).to(self.device)  # (ΣN, F)
        self.y = torch.from_numpy(np.concatenate([d.labels for d in datas])).to(self.device)  # (ΣN,)
        self.window_offsets = torch.arange(-(model_config.window_size - 1), 1, device=self.device)  # (W,)
        self.pe = PriceActionTransformer(model_config).pos_encoding.pe.to(self.device)  # shared, not trained

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
            history: dict[str, Any] = {f"{s}_{m}": [] for s in ("train", "val") for m in METRIC_NAMES}
            history["epoch_seconds"] = []
            members.append(_Member(
                config=cfg, data=data, offset=offset,
                train_ends=torch.from_numpy(data.ends["train"] + offset).to(self.device),
                val_ends=torch.from_numpy(data.ends["val"] + offset).to(self.device),
                pos_weight=resolve_pos_weight(cfg.pos_weight, data.split_labels("train")),
                shuffle_gen=torch.Generator().manual_seed(cfg.seed), dropout_gen=dropout_gen,
                history=history))
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

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    # -- the step ---------------------------------------------------------------------------------

    def _losses(self, params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor, weight: torch.Tensor,
                masks: list[torch.Tensor] | None, pos_weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-model summed loss (K,) and fp32 logits (K, B) of one batch, vmapped over the models."""
        config = self.model_config

        def one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                m: list[torch.Tensor] | None, pw: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            with self._autocast():
                logits = masked_forward(p, self.pe, x, m, config)
            logits = logits.float()  # the loss in fp32 under autocast, as Trainer
            loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none", pos_weight=pw)
            return (loss * w).sum(), logits

        dims = (0, 0, 0, 0, 0 if masks else None, 0 if pos_weight is not None else None)
        return vmap(one, in_dims=dims, randomness="error")(params, xb, yb, weight, masks or None, pos_weight)

    def _draw_masks(self, stack: _Stack, members: list[_Member], active: list[bool] | None,
                    buffers: list[torch.Tensor]) -> list[torch.Tensor]:
        """This step's dropout masks, scaled by 1 / (1 - p), one (K, ...) tensor per site."""
        p = self.model_config.dropout
        if not buffers:
            return []
        if self.device.type == "cpu":
            assert active is not None
            for j, member in enumerate(stack.slots):
                for buf in buffers:
                    if active[j]:  # the draws Trainer alone would make, from this model's stream
                        buf[j].bernoulli_(1.0 - p, generator=members[member].dropout_gen)
                    else:  # no draw: a model without a batch this step leaves its stream alone
                        buf[j].fill_(1.0 - p)
        else:
            for buf in buffers:
                buf.bernoulli_(1.0 - p)  # one draw for all models; capturable
        return [buf.div(1.0 - p) for buf in buffers]  # native dropout's scaling, same rounding

    def _step(self, stack: _Stack, members: list[_Member], buffers: list[torch.Tensor], idx: torch.Tensor,
              weight: torch.Tensor, count: torch.Tensor, active: torch.Tensor,
              active_host: list[bool] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks, gather, forward, loss, backward, AdamW for every model: (K,) loss sums, (K, B) preds."""
        masks = self._draw_masks(stack, members, active_host, buffers)
        xb, yb = self._gather(idx)
        loss_sum, logits = self._losses(stack.params(), xb, yb, weight, masks, stack.pos_weight)
        stack.flat.grad = None
        (loss_sum / count).sum().backward()  # models share no parameter: each gets its own gradient
        stack.adamw(active)
        return loss_sum.detach(), logits.detach() > 0

    # -- one run ------------------------------------------------------------------------------------

    def fit(self, batch: int, eval_batch: int) -> list[tuple[nn.Module, dict[str, Any]]]:
        start = time.perf_counter()
        members, modules = self._members()
        stack = _Stack(modules, members, self.device)
        sites = _dropout_sites(self.model_config, batch)
        graph: _Graph | None = None
        if self.device.type == "cuda":
            graph = self._capture(stack, members, sites, batch)
        val_idx, val_weight, _ = self._pad([m.val_ends for m in members],
                                           eval_batch, max(math.ceil(m.val_ends.numel() / eval_batch)
                                                           for m in members), self.device)
        max_epochs = max(m.config.max_epochs for m in members)
        for epoch in range(1, max_epochs + 1):
            epoch_start = time.perf_counter()
            if self.device.type == "cpu" and len(stack.slots) > sum(members[s].running for s in stack.slots):
                stack.keep([j for j, s in enumerate(stack.slots) if members[s].running])
            rows = stack.slots
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
            running = [members[s].running for s in rows]
            step_loss, pred = self._train_epoch(stack, members, sites, graph, idx, weight, count, own_steps,
                                                running, batch)
            val_loss, val_pred = self._eval_epoch(stack, val_idx, val_weight, eval_batch, rows)
            real = weight > 0
            stats = torch.cat([step_loss.sum(1, keepdim=True), self._confusion(pred, self.y[idx], real),
                               val_loss.unsqueeze(1),
                               self._confusion(val_pred, self.y[val_idx[rows]], val_weight[rows] > 0)],
                              dim=1).tolist()  # the epoch's single device→host transfer
            seconds = time.perf_counter() - epoch_start
            for j, s in enumerate(rows):
                if running[j]:
                    self._end_epoch(s, members[s], stack, j, epoch, stats[j], orders[j].numel(),
                                    members[s].val_ends.numel(), seconds, step_loss[j], batch)
            if not any(m.running for m in members):
                break
        out = []
        for k, (member, module) in enumerate(zip(members, modules)):
            state, start_col = {}, 0
            for name, shape, size in zip(stack.names, stack.shapes, stack.sizes):
                state[name] = stack.best[k, start_col:start_col + size].view(shape)
                start_col += size
            module = module.to(self.device)
            module.load_state_dict(state, strict=True)
            module.eval()
            h = member.history
            h.update(best_epoch=member.best_epoch, best_val_loss=member.best_loss, epochs_run=len(h["train_loss"]),
                     seconds=time.perf_counter() - start, device=str(self.device), params=count_parameters(module),
                     stopped_early=member.stopped_early, batch_size=batch, seed=member.config.seed,
                     pos_weight=member.pos_weight, compiled=False, lr=member.config.lr,
                     warmup_steps=member.config.warmup_steps, cuda_graph=graph is not None)
            out.append((module, h))
        return out

    def _train_epoch(self, stack: _Stack, members: list[_Member], sites: list[tuple[int, ...]],
                     graph: _Graph | None, idx: torch.Tensor, weight: torch.Tensor, count: torch.Tensor,
                     own_steps: list[int], running: list[bool], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the longest stream; nothing here waits for the device."""
        k = len(stack.slots)
        n_steps = count.shape[1]
        buffers = [torch.empty((k, *shape), device=self.device) for shape in sites]
        step_loss = torch.zeros(k, n_steps, device=self.device)
        pred = torch.empty(k, n_steps * batch, dtype=torch.bool, device=self.device)
        # Which rows take a step, known on the host: their own stream not exhausted and not stopped.
        active_host = [[running[j] and s < own_steps[j] for j in range(k)] for s in range(n_steps)]
        active = torch.tensor(active_host, device=self.device)  # (steps, K)
        for s in range(n_steps):
            sl = slice(s * batch, (s + 1) * batch)
            if graph is not None:
                loss_sum, step_pred = graph.replay(idx[:, sl], weight[:, sl], count[:, s], active[s])
            else:
                loss_sum, step_pred = self._step(stack, members, buffers, idx[:, sl], weight[:, sl], count[:, s],
                                                 active[s], active_host[s])
            step_loss[:, s] = loss_sum
            pred[:, sl] = step_pred
        return step_loss, pred

    @torch.no_grad()
    def _eval_epoch(self, stack: _Stack, idx: torch.Tensor, weight: torch.Tensor, batch: int,
                    rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each running model's summed val loss (K,) and predictions (K, steps*B), on the device."""
        idx, weight = idx[rows], weight[rows]
        total = torch.zeros(len(rows), device=self.device)
        pred = torch.empty(idx.shape, dtype=torch.bool, device=self.device)
        params = {n: t.detach() for n, t in stack.params().items()}
        for start in range(0, idx.shape[1], batch):
            sl = slice(start, start + batch)
            xb, yb = self._gather(idx[:, sl])
            loss_sum, logits = self._losses(params, xb, yb, weight[:, sl], None, stack.pos_weight)
            total += loss_sum
            pred[:, sl] = logits > 0
        return total, pred

    @staticmethod
    def _confusion(pred: torch.Tensor, target: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(true positives, predicted positives, actual positives) per model over its real samples: (K, 3)."""
        t = (target > 0.5) & real
        p = pred & real
        return torch.stack([(p & t).sum(1), p.sum(1), t.sum(1)], dim=1).float()

    def _end_epoch(self, k: int, member: _Member, stack: _Stack, row: int, epoch: int, stats: list[float],
                   n_train: int, n_val: int, seconds: float, step_loss: torch.Tensor, batch: int) -> None:
        cfg, h = member.config, member.history
        if not math.isfinite(stats[0]):
            bad = torch.nonzero(~torch.isfinite(step_loss)).flatten()
            raise NonFiniteLossError(f"train_many: model {k}: non-finite training loss at epoch {epoch}, step "
                                     f"{int(bad[0]) + 1} (batch size {batch}); check its input matrix for NaN/inf "
                                     f"values and its learning rate")
        if not math.isfinite(stats[4]):
            raise NonFiniteLossError(f"train_many: model {k}: non-finite validation loss ({stats[4]}) at epoch "
                                     f"{epoch}; check the val rows of its input matrix for NaN/inf values")
        tr, va = _metrics(*stats[:4], n_train), _metrics(*stats[4:], n_val)
        for m in METRIC_NAMES:
            h[f"train_{m}"].append(tr[m])
            h[f"val_{m}"].append(va[m])
        h["epoch_seconds"].append(seconds)
        improved = va["loss"] < member.best_loss
        log.info("model %d epoch [%d/%d] train loss %.4f | val loss %.4f | val F1 %.4f", k, epoch, cfg.max_epochs,
                 tr["loss"], va["loss"], va["f1"])
        if improved:
            member.best_loss, member.best_epoch, member.wait = va["loss"], epoch, 0
            with torch.no_grad():
                stack.best[k].copy_(stack.flat[row])  # a device copy: no sync
        else:
            member.wait += 1
        if self.on_epoch_end is not None:
            metrics = {f"train_{m}": tr[m] for m in METRIC_NAMES} | {f"val_{m}": va[m] for m in METRIC_NAMES}
            metrics |= {"epoch_seconds": seconds, "best_val_loss": member.best_loss, "is_best": float(improved)}
            self.on_epoch_end(k, epoch, metrics)
        if member.wait >= cfg.patience:
            member.running, member.stopped_early = False, True
            log.info("model %d: early stopping at epoch %d (best %.4f at epoch %d)", k, epoch, member.best_loss,
                     member.best_epoch)
        elif epoch >= cfg.max_epochs:
            member.running = False

    def _capture(self, stack: _Stack, members: list[_Member], sites: list[tuple[int, ...]],
                 batch: int) -> _Graph | None:
        """Record the fused step as a CUDA graph, or ``None`` (eager steps) if that fails.

        The warm-up steps before capture are undone: parameters restored, AdamW state zeroed.
        """
        k = len(stack.slots)
        saved = stack.flat.detach().clone()
        buffers = [torch.empty((k, *shape), device=self.device) for shape in sites]
        idx = torch.stack([m.train_ends[:1].expand(batch) for m in members])  # (K, B)
        inputs = (idx, torch.ones(k, batch, device=self.device), torch.full((k,), float(batch), device=self.device),
                  torch.ones(k, dtype=torch.bool, device=self.device))
        try:
            return _Graph(lambda i, w, c, a: self._step(stack, members, buffers, i, w, c, a, None), inputs,
                          self.device)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            log.warning("train_many: CUDA graph capture of the fused step failed (%s); running eager steps", exc)
            return None
        finally:
            with torch.no_grad():
                stack.flat.copy_(saved)
                stack.exp_avg.zero_()
                stack.exp_avg_sq.zero_()
                stack.steps.zero_()
