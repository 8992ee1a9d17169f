"""Visual sampler: prompt locations -> visual prompt tokens P_v.

Each prompt point (click, scribble sample, box corner/centre) becomes one token = point-sampled pixel-decoder
feature at that location + a learned kind/polarity embedding + a Fourier encoding of its position.

Shapes: features (B, D, h, w), points (B, K, 2) in [0, 1] (x, y), kinds (B, K) -> tokens (B, K, D).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from backend.dfimat.prompt_tensors import NUM_KINDS


def fourier_position(points: torch.Tensor, dim: int) -> torch.Tensor:
    """(…, 2) in [0, 1] -> (…, dim) sin/cos features at geometric frequencies."""
    n = dim // 4
    freqs = torch.exp(torch.arange(n, dtype=points.dtype, device=points.device) * (math.log(64.0) / max(n - 1, 1)))
    ang = points.unsqueeze(-1) * freqs * math.pi  # (…, 2, n)
    enc = torch.cat([ang.sin(), ang.cos()], dim=-1)  # (…, 2, 2n)
    return enc.flatten(-2)


class VisualSampler(nn.Module):
    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.dim = dim
        self.kind = nn.Embedding(NUM_KINDS, dim)
        self.pos = nn.Linear(dim, dim)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor, points: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        grid = (points * 2.0 - 1.0).unsqueeze(2)  # (B, K, 1, 2)
        sampled = F.grid_sample(features, grid, mode="bilinear", align_corners=False)  # (B, D, K, 1)
        sampled = sampled.squeeze(-1).transpose(1, 2)
        return self.proj(sampled) + self.kind(kinds) + self.pos(fourier_position(points, self.dim))
