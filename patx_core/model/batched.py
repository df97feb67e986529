"""K PriceActionTransformers of one shape as one batched network, and their stacked AdamW.

Every parameter of the K models is one ``(K, *shape)`` tensor under the module's own name
(``encoder.layers.0.linear1.weight`` is ``(K, d_ff, d_model)``), so model k's state dict is the
``[k]`` slice of each. The forward runs every layer once for all K models:

* a linear layer is one ``baddbmm`` over ``(K, rows, in)`` with weights ``(K, in, out)``;
* attention folds the model axis into the batch: ``(K·B, H, W, hd)``;
* LayerNorm normalizes each row, then applies each model's own scale and shift.

Why the arithmetic is written the way it is: the losses of a fused model must be the losses of the
same model trained alone, and Adam makes that demanding. A weight whose gradient is a sum that
nearly cancels (around AdamW's ``eps`` = 1e-8) gets an update of size ~lr whose sign and size
follow the gradient's last bits, so a kernel that merely sums in another order moves such weights
by ~lr/10 at the first step, and one epoch of baseline training turns that into a val loss 2e-3
apart. (That is what ``vmap`` over ``functional_call`` did: its batching rules compute the weight
gradients with other GEMM layouts than the single model's ``addmm``.) So here each model's slice
goes through the kernels a single model goes through: on CPU ``bmm``/``baddbmm`` run one
``addmm`` per model with the single model's operand layout, the attention is the math path the
native module takes in training, LayerNorm runs per model with its own affine (one fused
kernel, as alone), and AdamW is torch's fused kernel called per model over that model's slices,
exactly as ``torch.optim.AdamW(fused=True)`` calls it. A test pins the result: first-epoch
losses at baseline shapes within 1e-4 relative (measured 2.6e-6 on the val loss after 36 steps,
against 2e-3 for ``vmap``; what remains is mostly the attention's in-projection bias, whose
gradient the native module sums over a batch-second layout).

Dropout masks are inputs (:func:`dropout_sites` lists their shapes in the order the native modules
draw them), so that each model's masks can come from its own generator; see
:mod:`patx_core.model.fused`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from patx_core.model.transformer import PriceActionTransformer
from patx_core.settings.config import ModelConfig

_LN_EPS = 1e-5  # nn.TransformerEncoderLayer's layer_norm_eps
# torch.optim.AdamW's defaults, which Trainer uses.
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def dropout_sites(config: ModelConfig, batch: int) -> list[tuple[int, ...]]:
    """Shapes of the dropout masks of one model's training forward, in the order the native modules draw.

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


def site_view(mask: torch.Tensor, site: int) -> torch.Tensor:
    """A drawn (K, ...) mask in the layout the forward multiplies by (the second site is drawn (K, W, B, C))."""
    return mask.transpose(1, 2) if site % 4 == 1 and mask.dim() == 4 else mask


class BatchedTransformer(nn.Module):
    """K same-shape PriceActionTransformers; ``forward`` maps (K, B, W, F) windows to (K, B) logits."""

    def __init__(self, config: ModelConfig, models: Sequence[PriceActionTransformer]) -> None:
        super().__init__()
        self.config = config
        self.k = len(models)
        states = [dict(m.named_parameters()) for m in models]
        self.names = list(states[0])
        # Parameter names have dots; a ParameterDict keyed by them would nest, so store a flat list.
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([s[n].detach() for s in states]).contiguous()) for n in self.names)
        self.register_buffer("pe", models[0].pos_encoding.pe.clone(), persistent=False)  # (1, W, C) not trained

    def params(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.stacked))

    def state_dict_of(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's parameters as a ``PriceActionTransformer`` state dict (copies)."""
        return {n: p.detach()[k].clone() for n, p in zip(self.names, self.stacked)}

    def keep(self, rows: Sequence[int]) -> None:
        """Only these models stay (a stopped model leaves the stack, so later steps do not pay for it)."""
        index = torch.tensor(list(rows), device=self.pe.device)
        for i, p in enumerate(self.stacked):
            self.stacked[i] = nn.Parameter(p.detach().index_select(0, index).contiguous())
        self.k = len(rows)

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """(K, B, W, F) → (K, B) logits; ``masks`` (scaled, one (K, ...) per :func:`dropout_sites`
        entry) or ``None`` for the eval forward."""
        p, c = self.params(), self.config
        k, b, w, _ = x.shape
        d, heads = c.d_model, c.n_heads
        hd = d // heads
        scale = 1.0 / math.sqrt(math.sqrt(hd))  # SDPA's math path scales q and k by sqrt(scale) each
        site = iter(range(len(masks))) if masks else None

        def drop(t: torch.Tensor) -> torch.Tensor:
            if site is None:
                return t
            i = next(site)
            return t * site_view(masks[i], i).reshape(t.shape)  # type: ignore[index]

        h = _linear(x.reshape(k, b * w, -1), p["input_proj.weight"], p["input_proj.bias"])  # (K, B·W, C)
        h = (h.view(k, b, w, d) + self.pe[:, :w]).view(k, b * w, d)
        for layer in range(c.n_layers):
            n = f"encoder.layers.{layer}."
            qkv = _linear(h, p[n + "self_attn.in_proj_weight"], p[n + "self_attn.in_proj_bias"])  # (K, B·W, 3C)
            q, key, v = qkv.view(k * b, w, 3, heads, hd).permute(2, 0, 3, 1, 4)  # 3 × (K·B, H, W, hd)
            if site is None:  # eval: the fused kernel, without a (K·B, H, W, W) matrix in memory
                o = F.scaled_dot_product_attention(q, key, v)  # (K·B, H, W, hd)
            else:  # training: the math path the native module takes with dropout, masks included
                attn = drop(torch.softmax((q * scale) @ (key * scale).transpose(-2, -1), dim=-1))  # (K·B, H, W, W)
                o = attn @ v  # (K·B, H, W, hd)
            o = o.permute(0, 2, 1, 3).reshape(k, b * w, d)  # (K, B·W, C)
            o = drop(_linear(o, p[n + "self_attn.out_proj.weight"], p[n + "self_attn.out_proj.bias"]))
            h = _layer_norm(h + o, p[n + "norm1.weight"], p[n + "norm1.bias"])
            f = drop(F.relu(_linear(h, p[n + "linear1.weight"], p[n + "linear1.bias"])))  # (K, B·W, d_ff)
            f = drop(_linear(f, p[n + "linear2.weight"], p[n + "linear2.bias"]))
            h = _layer_norm(h + f, p[n + "norm2.weight"], p[n + "norm2.bias"])
        h = h.view(k, b, w, d).mean(dim=2)  # (K, B, C)
        h = drop(F.relu(_linear(h, p["head.0.weight"], p["head.0.bias"])))  # (K, B, head_hidden)
        return _linear(h, p["head.3.weight"], p["head.3.bias"]).squeeze(-1)  # (K, B)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K linear layers at once: (K, R, in) × (K, out, in) + (K, out) → (K, R, out).

    ``baddbmm`` runs ``addmm(bias, x_k, w_k.t())`` per model, which is what ``nn.Linear`` runs for
    one model, and its backward the same per-model GEMMs as ``addmm``'s.
    """
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Each model's LayerNorm over the last axis with its own affine: (K, R, C) → (K, R, C).

    One fused ``layer_norm`` per model rather than normalize-then-scale over all K: the fused kernel
    rounds the affine differently from a separate multiply and add, and the closer each model's
    arithmetic is to the lone model's, the less Adam has to amplify (see the module docstring).
    (Normalize-then-scale also held the baseline test's 1e-4 in one trial; K calls cost little.)
    """
    c = x.shape[-1]
    return torch.stack([F.layer_norm(x[j], (c,), weight[j], bias[j], _LN_EPS) for j in range(x.shape[0])])


class _ModelGroup:
    """One model's ``param_groups`` entry, so :class:`~patx_core.model.device_step.WarmUp` can drive its lr."""

    def __init__(self, lr: float | torch.Tensor) -> None:
        self.param_groups = [{"lr": lr}]


class StackedAdamW:
    """AdamW over a :class:`BatchedTransformer`: each model with its own lr, weight decay and step count.

    Each model's update is torch's fused AdamW kernel over that model's slices, with the lr it would
    have alone (a float, or a float32 tensor where a warm-up refills it), so a fused model's
    weights follow the lone model's to the last bit (see the module docstring). An inactive model
    (stopped, or out of data this step) keeps weights, moments and step count exactly: its
    *update* is skipped or undone, not its gradient zeroed — with momentum a zero gradient would
    still move it.
    """

    def __init__(self, model: BatchedTransformer, lrs: Sequence[float], weight_decays: Sequence[float],
                 tensor_lr: Sequence[bool]) -> None:
        self.model = model
        device = model.pe.device
        self.exp_avg = [torch.zeros_like(p) for p in model.stacked]
        self.exp_avg_sq = [torch.zeros_like(p) for p in model.stacked]
        self.steps = torch.zeros(model.k, device=device)  # (K,) float32, as torch's per-parameter `step`
        self.weight_decays = list(weight_decays)
        # A tensor lr where a warm-up refills it (as Trainer's optimizer has), else the float.
        self.groups = [_ModelGroup(torch.tensor(lr, device=device) if t else lr) for lr, t in zip(lrs, tensor_lr)]

    def keep(self, rows: Sequence[int]) -> None:
        """Follow :meth:`BatchedTransformer.keep` (call it after the model's)."""
        index = torch.tensor(list(rows), device=self.steps.device)
        self.exp_avg = [t.index_select(0, index).contiguous() for t in self.exp_avg]
        self.exp_avg_sq = [t.index_select(0, index).contiguous() for t in self.exp_avg_sq]
        self.steps = self.steps.index_select(0, index)
        self.weight_decays = [self.weight_decays[r] for r in rows]
        self.groups = [self.groups[r] for r in rows]

    @torch.no_grad()
    def reset(self) -> None:
        """A fresh optimizer: zero moments and step counts (after the steps a graph capture ran)."""
        for t in self.exp_avg + self.exp_avg_sq + [self.steps]:
            t.zero_()

    @torch.no_grad()
    def step(self, active: torch.Tensor, active_host: Sequence[bool] | None) -> None:
        """Update the models where ``active`` ((K,) bool); ``active_host`` is the same on the host, or
        ``None`` inside a CUDA graph, where every model is stepped and the inactive ones restored."""
        params = list(self.model.stacked)
        state = params + self.exp_avg + self.exp_avg_sq + [self.steps]
        saved = [t.clone() for t in state] if active_host is None else None
        for k in range(self.model.k):
            if active_host is not None and not active_host[k]:
                continue
            steps = [self.steps[k]] * len(params)
            torch._foreach_add_(steps[:1], 1)
            torch._fused_adamw_([p[k] for p in params], [p.grad[k] for p in params],  # type: ignore[index]
                                [m[k] for m in self.exp_avg], [v[k] for v in self.exp_avg_sq], [], steps,
                                amsgrad=False, lr=self.groups[k].param_groups[0]["lr"], beta1=ADAM_BETAS[0],
                                beta2=ADAM_BETAS[1], weight_decay=self.weight_decays[k], eps=ADAM_EPS,
                                maximize=False, grad_scale=None, found_inf=None)
        if saved is not None:
            for t, old in zip(state, saved):
                keep = active.view(-1, *([1] * (t.dim() - 1)))
                t.copy_(torch.where(keep, t, old))
