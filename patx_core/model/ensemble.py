"""A seed ensemble: one architecture trained under K seeds, judged and served as one model.

One initialization's luck can flip a verdict (the same cell passed and failed the gate across
seeds), so with ``train.ensemble = true`` the candidate is the mean of the K members' buy
probabilities. :class:`SeedEnsemble` is an ``nn.Module`` whose ``forward`` returns the logit of
that mean, so everything that turns a model's logits into probabilities with a sigmoid (the
evaluation, ``predict``, the latest signal, the ledger, walk-forward) scores the ensemble
without knowing it is one. Its state dict is the members' under ``members.<k>.``: a checkpoint
stays plain tensors, loadable with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import nn

from patx_core.data.windows import WindowedData
from patx_core.model.transformer import PriceActionTransformer
from patx_core.settings.config import ModelConfig, TrainConfig


class SeedEnsemble(nn.Module):
    """K PriceActionTransformers of one config; the output is the logit of their mean probability."""

    def __init__(self, config: ModelConfig, n_members: int) -> None:
        super().__init__()
        if n_members < 2:
            raise ValueError(f"SeedEnsemble needs at least 2 members, got {n_members}")
        self.config = config
        self.members = nn.ModuleList(PriceActionTransformer(config) for _ in range(n_members))

    @classmethod
    def from_members(cls, config: ModelConfig, models: Sequence[nn.Module]) -> "SeedEnsemble":
        """An ensemble of ``config`` holding copies of ``models``' weights (in eval mode)."""
        from patx_core.model.inference import unwrap

        ensemble = cls(config, len(models))
        for member, model in zip(ensemble.members, models):
            member.load_state_dict(unwrap(model).state_dict())  # a compiled wrapper's keys carry _orig_mod.
        return ensemble.to(next(models[0].parameters()).device).eval()

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's buy probability, in float64: (B, W, F) → (K, B)."""
        return torch.stack([torch.sigmoid(m(x).double()) for m in self.members])  # (K, B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, F) → (B,) float64 logits whose sigmoid is the members' mean probability.

        float64 because the mean of K probabilities near 0 or 1 would lose digits on the way
        through a float32 logit; ``torch.logit`` of exactly 1.0 is +inf, whose sigmoid is 1.0.
        """
        return torch.logit(self.member_probabilities(x).mean(dim=0))  # (B,)


def member_count(train: TrainConfig) -> int:
    """How many models a checkpoint of this training config holds: K for an ensemble, else 1."""
    return len(train.seed_list) if train.ensemble else 1


def build_model(model: ModelConfig, train: TrainConfig) -> nn.Module:
    """An untrained model of the shape a checkpoint of ``(model, train)`` stores."""
    n = member_count(train)
    return SeedEnsemble(model, n) if n > 1 else PriceActionTransformer(model)


def train_seeds(model_config: ModelConfig, train_config: TrainConfig, datas: Sequence[WindowedData], *,
                on_epoch_end: Callable[[int, int, dict[str, float]], None] | None = None
                ) -> list[list[tuple[nn.Module, dict[str, Any]]]]:
    """For each of ``datas``, one model per seed of ``train_config.seed_list`` (seeds in order),
    all trained in one :func:`~patx_core.model.fused.train_many` run: a seed study's models, or a
    seed ensemble's members. ``on_epoch_end`` gets the index over every model (data-major: data
    ``i``'s ``s``-th seed is model ``i * K + s``)."""
    from patx_core.model.fused import train_many

    seeds = train_config.seed_list
    configs = [dataclasses.replace(train_config, seeds=(), seed=s, ensemble=False) for s in seeds]
    trained = train_many(model_config, [c for _ in datas for c in configs], [d for d in datas for _ in seeds],
                         on_epoch_end=on_epoch_end)
    k = len(seeds)
    return [trained[i * k:(i + 1) * k] for i in range(len(datas))]
