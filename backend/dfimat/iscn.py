"""Interactive semantic capture network (ISCN): localises the target person from any mix of prompts.

Wiring (backbone features are computed once per image outside this module and cached):
  dense prompt maps + previous prediction --DensePromptEncoder--> per-level prompt features
  M_ref (crm.conflict_map of previous prediction vs this round's marks) --ConflictEmbedding--> added per level
  backbone feats + those --PixelDecoder--> levels (s32, s16, s8) and mask features (s4)
  prompt points --VisualSampler (on the s8 level)--> P_v;  text embedding -> P_t (in the decoder)
  Decoder (cross-attention to s32/s16) -> per-query mask logits at s4 and concept logits; `best_mask` picks the query
  the concept classifier ranks first (the paper's rule; a trained `selector.QuerySelector` can replace it).
"""

from __future__ import annotations

import torch
from torch import nn

from backend.dfimat.crm import ConflictEmbedding, conflict_map
from backend.dfimat.decoder import Decoder
from backend.dfimat.encoder import PixelDecoder, conv_bn_relu
from backend.dfimat.prompt_tensors import KIND_NEG_CLICK, KIND_NEG_SCRIBBLE
from backend.dfimat.sampler import VisualSampler

LEVELS = ("s4", "s8", "s16", "s32")


class DensePromptEncoder(nn.Module):
    """[all-pos, all-neg, box, prev-mask, has-prev] at stride 4 -> features at strides 4..32."""

    def __init__(self, dim: int, mask_dim: int) -> None:
        super().__init__()
        cin = 5
        self.s4 = conv_bn_relu(cin, 16)
        self.s8 = conv_bn_relu(16, 32, stride=2)
        self.s16 = conv_bn_relu(32, 64, stride=2)
        self.s32 = conv_bn_relu(64, 64, stride=2)
        self.proj = nn.ModuleDict({"s4": nn.Conv2d(16, mask_dim, 1), "s8": nn.Conv2d(32, dim, 1),
                                   "s16": nn.Conv2d(64, dim, 1), "s32": nn.Conv2d(64, dim, 1)})

    def forward(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        x4 = self.s4(maps)
        x8 = self.s8(x4)
        x16 = self.s16(x8)
        x32 = self.s32(x16)
        return {k: self.proj[k](v) for k, v in zip(LEVELS, (x4, x8, x16, x32), strict=True)}


class ISCN(nn.Module):
    def __init__(self, dim: int = 128, mask_dim: int = 64, num_queries: int = 8, num_memory: int = 4,
                 num_layers: int = 3, heads: int = 4) -> None:
        super().__init__()
        self.pixel_decoder = PixelDecoder(dim, mask_dim)
        self.dense_encoder = DensePromptEncoder(dim, mask_dim)
        self.conflict = ConflictEmbedding(32, {"s4": mask_dim, "s8": dim, "s16": dim, "s32": dim})
        self.sampler = VisualSampler(dim)
        self.decoder = Decoder(dim, mask_dim, num_queries, num_memory, num_layers, heads)

    def forward(self, feats: dict[str, torch.Tensor], prompts: dict[str, torch.Tensor], prev: torch.Tensor,
                has_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: backbone output; prompts: `prompt_tensors.collate` output; prev (B, 1, G, G) probabilities of the
        previous round (zeros if none); has_prev (B,) bool. Returns masks (B, Q, G, G) logits, class logits (B, Q)."""
        dense = prompts["dense"]
        prev = prev * has_prev.view(-1, 1, 1, 1).float()
        maps = torch.cat([dense[:, :3], prev, has_prev.view(-1, 1, 1, 1).float().expand_as(prev)], dim=1)
        prompt_feats = self.dense_encoder(maps)
        ref = conflict_map(prev[:, 0], dense[:, 3], dense[:, 4])
        ref = ref * has_prev.view(-1, 1, 1).long()
        sizes = {k: tuple(feats[k].shape[-2:]) for k in LEVELS}
        conflict = self.conflict(ref, sizes)
        prompt_feats = {k: prompt_feats[k] + conflict[k] for k in LEVELS}
        levels, mask_feats = self.pixel_decoder(feats, prompt_feats)
        vis = self.sampler(levels[-1], prompts["points"], prompts["kinds"])
        kinds = prompts["kinds"]
        positive = (kinds != KIND_NEG_CLICK) & (kinds != KIND_NEG_SCRIBBLE)
        # Cross-attention reads the two coarse levels only: the s8 level (2304 tokens at S = 384) would dominate the
        # CPU cost, and its detail reaches the masks through the mask features anyway.
        return self.decoder(levels[:2], mask_feats, vis, prompts["valid"], positive, prompts["text"],
                            prompts["has_text"], prev, has_prev)


def best_mask(masks: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """(B, Q, G, G), (B, Q) -> (B, G, G) logits of the query the concept classifier ranks first."""
    idx = class_logits.argmax(dim=1)
    return masks[torch.arange(masks.shape[0], device=masks.device), idx]

