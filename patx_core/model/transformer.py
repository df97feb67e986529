"""The guide's PriceActionTransformer: a small encoder-only transformer over a window of candles.

input (B, W, F) → Linear(F→d_model) → + sinusoidal positions → TransformerEncoder (post-norm,
batch_first) → mean over time → Linear(d_model→head_hidden) → ReLU → Dropout → Linear(→1).
``forward`` returns the logit; ``sigmoid(logit)`` is the buy probability. With the default
``ModelConfig`` the model has exactly 406,785 trainable parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from patx_core.settings.config import ModelConfig


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sin/cos position signal (Vaswani et al.), added to the projected candles.

    A non-persistent buffer: it is derived from the config, so it is neither trained nor saved —
    a checkpoint rebuilt from its config recreates it bit for bit.
    """

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (T, 1)
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                             * (-math.log(10000.0) / d_model))  # (C/2,)
        pe = torch.zeros(max_len, d_model)  # (T, C)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)  # (1, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.size(1)]  # (B, T, C)


class PriceActionTransformer(nn.Module):
    """Binary classifier of a candle window; see the module docstring for the layer stack."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.input_proj = nn.Linear(c.input_dim, c.d_model)
        self.pos_encoding = SinusoidalPositionalEncoding(c.d_model, c.window_size)
        layer = nn.TransformerEncoderLayer(d_model=c.d_model, nhead=c.n_heads, dim_feedforward=c.d_ff,
                                           dropout=c.dropout, batch_first=True)
        # Nested tensors only help with padding masks, which fixed-length windows never have.
        self.encoder = nn.TransformerEncoder(layer, num_layers=c.n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(
            nn.Linear(c.d_model, c.head_hidden),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.head_hidden, 1),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier-uniform on every weight matrix (the guide's init); biases and LayerNorm keep
        # PyTorch's defaults (zeros / ones), which Xavier is not defined for.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of windows: (B, W, F) → (B,)."""
        h = self.input_proj(x)  # (B, W, d_model)
        h = self.pos_encoding(h)  # (B, W, d_model)
        h = self.encoder(h)  # (B, W, d_model)
        h = h.mean(dim=1)  # (B, d_model)
        return self.head(h).squeeze(-1)  # (B,)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (a ``torch.compile``d wrapper reports the same: it shares the tensors)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
