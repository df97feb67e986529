"""PriceActionTransformer: the guide's exact shape, output contract, init, and that it can learn."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from patx_core.settings.config import ModelConfig
from patx_core.model.transformer import PriceActionTransformer, count_parameters

TINY = ModelConfig(window_size=8, d_model=16, n_heads=2, n_layers=1, d_ff=32, head_hidden=8, dropout=0.0)


def test_default_model_has_the_guides_406785_parameters() -> None:
    assert count_parameters(PriceActionTransformer(ModelConfig())) == 406_785


def test_forward_gives_one_logit_per_window_and_sigmoid_is_a_probability() -> None:
    torch.manual_seed(0)
    model = PriceActionTransformer(ModelConfig()).eval()
    x = 3 * torch.randn(5, 64, 14)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (5,)
    prob = torch.sigmoid(logits)
    assert torch.isfinite(prob).all() and (prob >= 0).all() and (prob <= 1).all()
    assert prob.std() > 0  # not a constant output
    # each window's logit is its own: scoring one window alone gives what it got in the batch
    with torch.no_grad():
        alone = torch.cat([model(x[i:i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(alone, logits, rtol=1e-5, atol=1e-5)  # float32, batched vs single GEMMs


def test_positional_encoding_is_a_fixed_buffer_that_makes_order_matter() -> None:
    torch.manual_seed(0)
    model = PriceActionTransformer(TINY).eval()
    names = [n for n, _ in model.named_parameters()]
    assert not any("pe" in n.split(".")[-1] for n in names)
    pe = model.pos_encoding.pe  # (1, T, C)
    assert pe.shape == (1, TINY.window_size, TINY.d_model)
    assert torch.allclose(pe[0, 0, 0::2], torch.zeros(TINY.d_model // 2))  # sin(0)
    assert torch.allclose(pe[0, 0, 1::2], torch.ones(TINY.d_model // 2))  # cos(0)
    # Attention + mean pooling is permutation-invariant; only the position signal breaks that.
    x = torch.randn(4, TINY.window_size, 14)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(1)), atol=1e-5)


def test_weight_matrices_use_xavier_uniform_bounds() -> None:
    torch.manual_seed(0)
    model = PriceActionTransformer(ModelConfig())
    w = model.input_proj.weight  # (128, 14): PyTorch's default bound 1/sqrt(14) is larger than Xavier's
    bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.95 * bound


@pytest.mark.parametrize("kwargs, message", [
    ({"d_model": 130, "n_heads": 4}, "ModelConfig.d_model must be divisible by n_heads=4, got 130"),
    ({"n_layers": 0}, "ModelConfig.n_layers must be a positive integer, got 0"),
    ({"dropout": 1.0}, "ModelConfig.dropout must be < 1, got 1.0")])
def test_invalid_configurations_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ModelConfig(**kwargs)


def test_tiny_model_overfits_one_small_batch() -> None:
    torch.manual_seed(0)
    model = PriceActionTransformer(TINY)
    x = torch.randn(16, TINY.window_size, 14)
    y = torch.tensor([0.0, 1.0] * 8)  # labels unrelated to x: only memorization fits them
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
