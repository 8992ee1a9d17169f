"""ISCN decoder (Eq. 2-5): object queries + memory tokens + text/visual prompt tokens.

Each layer: (1) cross-attention of the object queries and memory tokens to one image-feature level (round robin
coarse -> fine; memory tokens only see pixels inside the previous prediction, SEEM-style, which is how the previous
round enters the decoder); (2) self-attention over [object queries, memory, visual tokens P_v, text token P_t]
(prompt tokens take part in self-attention only); (3) FFN. Heads: MaskPredictor = MLP(query) . mask features;
ConceptClassifier = logit_scale * cos(class embedding(query), target embedding), where the target is a learned
"person" concept plus the projected text and the mean positive visual token, so a softmax over queries picks the
query the prompts point at.

Shapes: levels [(B, D, h_l, w_l)], mask_feats (B, Dm, G, G), vis (B, K, D), vis_valid (B, K), vis_positive (B, K),
text (B, 384), has_text (B,), prev (B, 1, G, G), has_prev (B,)
-> masks (B, Q, G, G) logits, class_logits (B, Q).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def sine_position(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """(h*w, dim) 2-D sine position encoding."""
    n = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(n, device=device, dtype=torch.float32) / n))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    ay = yy.reshape(-1, 1) * freqs * 2 * math.pi
    ax = xx.reshape(-1, 1) * freqs * 2 * math.pi
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(inplace=True), nn.Linear(ffn, dim))
        self.n1, self.n2, self.n3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor, prompts: torch.Tensor, memory: torch.Tensor, mem_pos: torch.Tensor,
                cross_mask: torch.Tensor | None, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nq = queries.shape[1]
        attn, _ = self.cross(queries, memory + mem_pos, memory, attn_mask=cross_mask)
        queries = self.n1(queries + attn)
        seq = torch.cat([queries, prompts], dim=1)
        attn, _ = self.self_attn(seq, seq, seq, key_padding_mask=pad_mask)
        seq = self.n2(seq + attn)
        seq = self.n3(seq + self.ffn(seq))
        return seq[:, :nq], seq[:, nq:]


class Decoder(nn.Module):
    def __init__(self, dim: int = 128, mask_dim: int = 64, num_queries: int = 8, num_memory: int = 4,
                 num_layers: int = 3, heads: int = 4, text_dim: int = 384) -> None:
        super().__init__()
        self.num_queries, self.num_memory = num_queries, num_memory
        self.queries = nn.Embedding(num_queries + num_memory, dim)
        self.level_embed = nn.Embedding(3, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, dim * 2) for _ in range(num_layers))
        self.text_proj = nn.Linear(text_dim, dim)
        self.text_type = nn.Parameter(torch.zeros(dim))
        self.person = nn.Parameter(torch.randn(dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim),
                                        nn.ReLU(inplace=True), nn.Linear(dim, mask_dim))
        self.class_embed = nn.Linear(dim, dim)
        self.target_proj = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def _memory_mask(self, prev: torch.Tensor, has_prev: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B*heads, Q+M, h*w) bool, True = blocked. Memory rows see only the previous foreground."""
        b = prev.shape[0]
        k = int(prev.shape[-1]) // size[1]  # levels are S/16, S/32 and prev is S/4: integer ratios
        inside = F.max_pool2d(prev, k).flatten(1) > 0.5  # (B, hw)
        usable = has_prev & inside.any(dim=1)
        blocked_mem = ~inside & usable[:, None]
        nq, nm = self.num_queries, self.num_memory
        mask = torch.zeros(b, nq + nm, inside.shape[1], dtype=torch.bool, device=prev.device)
        mask[:, nq:] = blocked_mem[:, None, :]
        return mask.repeat_interleave(self.layers[0].heads, dim=0)

    def forward(self, levels: list[torch.Tensor], mask_feats: torch.Tensor, vis: torch.Tensor,
                vis_valid: torch.Tensor, vis_positive: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor,
                prev: torch.Tensor, has_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = mask_feats.shape[0]
        queries = self.queries.weight.unsqueeze(0).expand(b, -1, -1)
        text_tok = (self.text_proj(text) + self.text_type).unsqueeze(1)
        prompts = torch.cat([vis, text_tok], dim=1)
        pad = torch.cat([~vis_valid, ~has_text[:, None]], dim=1)
        pad = torch.cat([torch.zeros(b, queries.shape[1], dtype=torch.bool, device=pad.device), pad], dim=1)

        flat = []
        for i, lv in enumerate(levels):
            h, w = lv.shape[-2:]
            pos = sine_position(h, w, lv.shape[1], lv.device) + self.level_embed.weight[i]
            flat.append((lv.flatten(2).transpose(1, 2), pos.unsqueeze(0), self._memory_mask(prev, has_prev, (h, w))))
        for j, layer in enumerate(self.layers):
            mem, pos, cmask = flat[j % len(flat)]
            queries, prompts = layer(queries, prompts, mem, pos, cmask, pad)

        obj = self.norm(queries[:, : self.num_queries])
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(obj), mask_feats)
        vis_out = prompts[:, : vis.shape[1]]
        pos_w = (vis_valid & vis_positive).float().unsqueeze(-1)
        vis_mean = (vis_out * pos_w).sum(1) / pos_w.sum(1).clamp(min=1.0)
        target = self.person + self.target_proj(vis_mean) + has_text[:, None].float() * self.text_proj(text)
        cls = F.normalize(self.class_embed(obj), dim=-1) @ F.normalize(target, dim=-1).unsqueeze(-1)
        class_logits = cls.squeeze(-1) * self.logit_scale.exp().clamp(max=100.0)
        return masks, class_logits
