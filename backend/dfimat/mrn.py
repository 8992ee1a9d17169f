"""Matting refinement network (MRN): image crop + coarse mask (4 channels) -> alpha matte.

Global branch: a small hierarchical transformer (4 blocks at strides 8, 16, 32, 32; keys/values spatially reduced
so attention stays cheap at 512 px). Local branch: 3 stride-2 convolutions (strides 2, 4, 8). Feature assembling
fuses the deepest global feature with the stride-8 local feature; progressive fusion then upsamples 8 -> 4 -> 2 -> 1
with skips from the local branch (and the raw input at full resolution). Both heads output corrections to the coarse
mask's logit (residual refinement). Two PRM heads (MGMatting-style progressive
refinement): a stride-4 alpha, then a full-resolution alpha that replaces it only in the stride-4 result's uncertain
band.

Shapes: x (B, 4, H, W) with H, W multiples of 32, RGB in [0, 1] and mask in [0, 1] -> dict with
"alpha_os4" (B, 1, H, W), "alpha_os1" (B, 1, H, W), "alpha" (B, 1, H, W).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from backend.dfimat.encoder import conv_bn_relu

PRM_BAND = 4  # px the stride-4 result's uncertain region is grown by before the full-resolution head takes over
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def input_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) the MRN runs a ``width`` x ``height`` crop at: longer side at most ``max_side`` (never enlarged), each
    side rounded up to a multiple of 32 and at least 64."""
    scale = min(1.0, max_side / max(width, height))
    return (max(64, int(math.ceil(width * scale / 32)) * 32), max(64, int(math.ceil(height * scale / 32)) * 32))


class Attention(nn.Module):
    """Multi-head attention written with -1 reshapes so exported graphs keep dynamic token counts."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        hd = c // self.heads
        q = self.q(x).reshape(b, -1, self.heads, hd).transpose(1, 2)
        k, v = self.kv(context).reshape(b, -1, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * hd ** -0.5, dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, -1, c))


class ReducedAttentionBlock(nn.Module):
    """Transformer block whose keys/values are average-pooled by `reduction` (SegFormer-like efficient attention)."""

    def __init__(self, dim: int, heads: int, reduction: int) -> None:
        super().__init__()
        self.reduction = reduction
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        kv = F.avg_pool2d(x, self.reduction) if self.reduction > 1 else x
        kv = self.n1(kv.flatten(2).transpose(1, 2))
        q = self.n1(tokens)
        tokens = tokens + self.attn(q, kv)
        tokens = tokens + self.mlp(self.n2(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class GlobalBranch(nn.Module):
    def __init__(self, dims: tuple[int, int, int] = (64, 96, 128)) -> None:
        super().__init__()
        d1, d2, d3 = dims
        self.embed = nn.Conv2d(4, d1, 8, 8)
        self.b1 = ReducedAttentionBlock(d1, 2, 4)
        self.down2 = nn.Conv2d(d1, d2, 2, 2)
        self.b2 = ReducedAttentionBlock(d2, 2, 2)
        self.down3 = nn.Conv2d(d2, d3, 2, 2)
        self.b3 = ReducedAttentionBlock(d3, 4, 1)
        self.b4 = ReducedAttentionBlock(d3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b1(self.embed(x))
        x = self.b2(self.down2(x))
        return self.b4(self.b3(self.down3(x)))


class MRN(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.global_branch = GlobalBranch()
        self.local2 = conv_bn_relu(4, w, stride=2)
        self.local4 = conv_bn_relu(w, w + 16, stride=2)
        self.local8 = conv_bn_relu(w + 16, 2 * w, stride=2)
        # Widths shrink towards full resolution: on a CPU the stride-1/2 convolutions dominate the cost.
        self.assemble = conv_bn_relu(128 + 2 * w, 64)
        self.fuse4 = conv_bn_relu(64 + w + 16, 48)
        self.fuse2 = conv_bn_relu(48 + w, 24)
        self.fuse1 = nn.Sequential(conv_bn_relu(24 + 4, 16), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(inplace=True))
        self.head4 = nn.Conv2d(48, 1, 3, 1, 1)
        self.head1 = nn.Conv2d(16, 1, 3, 1, 1)
        # Heads predict corrections to the coarse mask's logit; zero init makes the untrained MRN pass the coarse
        # mask through, so refinement can only start from (and improve on) the ISCN result.
        for head in (self.head4, self.head1):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @staticmethod
    def uncertain(alpha: torch.Tensor, width: int) -> torch.Tensor:
        """Pixels whose alpha is neither ~0 nor ~1, dilated by `width` (PRM's refinement region)."""
        band = ((alpha > 0.01) & (alpha < 0.99)).float()
        return F.max_pool2d(band, 2 * width + 1, 1, width)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"MRN input sides must be multiples of 32, got {h}x{w}")
        rgb = (x[:, :3] - self.mean) / self.std
        coarse = x[:, 3:4].clamp(0.0, 1.0)
        prior = torch.logit(coarse * 0.98 + 0.01)  # bounded: a hard 0/1 mask stays correctable
        x = torch.cat([rgb, coarse * 2.0 - 1.0], dim=1)
        g = self.global_branch(x)
        l2 = self.local2(x)
        l4 = self.local4(l2)
        l8 = self.local8(l4)
        f8 = self.assemble(torch.cat([F.interpolate(g, size=l8.shape[-2:], mode="bilinear", align_corners=False),
                                      l8], 1))
        f4 = self.fuse4(torch.cat([F.interpolate(f8, scale_factor=2.0, mode="bilinear", align_corners=False), l4], 1))
        f2 = self.fuse2(torch.cat([F.interpolate(f4, scale_factor=2.0, mode="bilinear", align_corners=False), l2], 1))
        f1 = self.fuse1(torch.cat([F.interpolate(f2, scale_factor=2.0, mode="bilinear", align_corners=False), x], 1))
        a4 = torch.sigmoid(prior + F.interpolate(self.head4(f4), size=(h, w), mode="bilinear", align_corners=False))
        a1 = torch.sigmoid(prior + self.head1(f1))
        band = self.uncertain(a4.detach(), PRM_BAND)
        alpha = a4 * (1.0 - band) + a1 * band
        return {"alpha_os4": a4, "alpha_os1": a1, "alpha": alpha}
