"""Projector from encoder frames to LLM embeddings, with frame stacking."""
from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Stack ``stack`` consecutive frames, then Linear-GELU-Linear to ``llm_dim``.

    forward: x (B, T, enc_dim), lengths (B,) -> (B, ceil(T / stack), llm_dim), ceil(lengths / stack).
    """

    def __init__(self, enc_dim: int, llm_dim: int, stack: int = 2, hidden: int | None = None):
        super().__init__()
        self.stack = stack
        hidden = hidden or llm_dim
        self.net = nn.Sequential(nn.Linear(enc_dim * stack, hidden), nn.GELU(), nn.Linear(hidden, llm_dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        x = x * (torch.arange(t, device=x.device)[None] < lengths[:, None]).unsqueeze(-1).to(x.dtype)  # no padding leaks
        pad = (-t) % self.stack
        if pad:
            x = nn.functional.pad(x, (0, 0, 0, pad))
        x = x.reshape(b, (t + pad) // self.stack, d * self.stack)
        return self.net(x), (lengths + self.stack - 1) // self.stack
