"""Contrastive reasoning module (CRM).

M_ref compares the previous prediction with the new round's input: 0 = no conflict, 1 = previously background but now
marked foreground, 2 = previously foreground but now marked background. Each value maps to a learned C1-d vector
(a 1x1 convolution over its one-hot code, i.e. an embedding lookup); the embedding is resized to every feature level
and added to the image features. The previous prediction also masks the memory tokens' attention in the decoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NO_CONFLICT, PREV_BG_NOW_FG, PREV_FG_NOW_BG = 0, 1, 2


def conflict_map(prev_mask: torch.Tensor, pos_map: torch.Tensor, neg_map: torch.Tensor) -> torch.Tensor:
    """prev_mask: probabilities (…, H, W); pos_map / neg_map: this round's marks (…, H, W). Returns long M_ref.

    Where a pixel is marked both positive and negative in the same round, positive wins (the user's later intent is
    unknown, and adding foreground is the more common correction)."""
    prev_fg = prev_mask > 0.5
    zero = torch.zeros(prev_mask.shape, dtype=torch.long, device=prev_mask.device)
    ref = torch.where((neg_map > 0.5) & prev_fg, zero + PREV_FG_NOW_BG, zero)
    return torch.where((pos_map > 0.5) & ~prev_fg, zero + PREV_BG_NOW_FG, ref)


class ConflictEmbedding(nn.Module):
    """M_ref (B, H, W) -> E_c (B, C1, H, W), then per-level projections added to features."""

    def __init__(self, c1: int = 32, level_dims: dict[str, int] | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, c1)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.level_proj = nn.ModuleDict({k: nn.Conv2d(c1, d, 1) for k, d in (level_dims or {}).items()})

    def forward(self, ref: torch.Tensor, sizes: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
        e = self.embed(ref).permute(0, 3, 1, 2)  # (B, C1, H, W)
        out = {}
        for key, size in sizes.items():
            k = int(e.shape[-1]) // size[1]  # feature levels divide the stride-4 grid exactly
            resized = e if k == 1 else F.avg_pool2d(e, k)
            out[key] = self.level_proj[key](resized)
        return out
