"""Query selection: which of the decoder's object queries becomes the answer.

The paper picks the query the concept classifier ranks first (Eq. 5). In DFIMat-S that classifier is trained with a
small weight (0.1 in Eq. 6) and sees only query embeddings, and on held-out crowded photos the query it picks is on
average clearly worse than the best of the eight (docs/experiments.md, "Training"). The selector is a SAM-style mask-quality
scorer added after the decoder: per query it looks at the concept logit and at how the query's mask agrees with
this round's prompts (covers the positive marks, avoids the negative ones, stays in the box, fills it, agrees with the
previous prediction), and a tiny MLP turns those numbers into a score. It is trained on the frozen ISCN's own
outputs (`backend.train.selector`) and runs in torch after either runtime, so the exported ISCN graphs stay as
they are. A checkpoint without a selector falls back to the concept classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from backend.dfimat.iscn import best_mask

# Dense prompt channels (backend.dfimat.prompt_tensors): all positive marks, all negative marks, box.
_POS, _NEG, _BOX = 0, 1, 2
FEATURES = ("logit_gap", "class_prob", "area", "rel_area", "certainty", "pos_cover", "has_pos", "neg_cover",
            "has_neg", "box_fill", "outside_box", "has_box", "prev_iou", "has_prev")


def query_features(masks: torch.Tensor, class_logits: torch.Tensor, dense: torch.Tensor, prev: torch.Tensor,
                   has_prev: torch.Tensor) -> torch.Tensor:
    """masks (B, Q, G, G) logits, class_logits (B, Q), dense (B, 5, G, G), prev (B, 1, G, G) probabilities,
    has_prev (B,) -> (B, Q, len(FEATURES)) features, all roughly in [0, 1] or small ranges."""
    p = masks.float().sigmoid()
    eps = 1e-6
    area = p.flatten(2).mean(-1)  # (B, Q)
    rel_area = area / area.max(dim=1, keepdim=True).values.clamp(min=eps)
    # How decided the mask is where it is not plain background: blobs of p ~ 0.5 are guesses.
    active = (p > 0.1).float()
    certainty = ((2 * p - 1).abs() * active).flatten(2).sum(-1) / active.flatten(2).sum(-1).clamp(min=1.0)

    def cover(ch: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = dense[:, ch : ch + 1].float()  # (B, 1, G, G)
        total = m.flatten(2).sum(-1)  # (B, 1)
        frac = (p * m).flatten(2).sum(-1) / total.clamp(min=eps)
        has = (total > 0).float().expand_as(frac)
        return frac * has, has

    pos_cover, has_pos = cover(_POS)
    neg_cover, has_neg = cover(_NEG)
    box_fill, has_box = cover(_BOX)
    box = dense[:, _BOX : _BOX + 1].float()
    mass = p.flatten(2).sum(-1).clamp(min=eps)
    outside_box = (p * (1 - box)).flatten(2).sum(-1) / mass * has_box
    q = prev.float() * has_prev.view(-1, 1, 1, 1).float()
    inter = (p * q).flatten(2).sum(-1)
    union = (p + q - p * q).flatten(2).sum(-1).clamp(min=eps)
    hp = has_prev.float().view(-1, 1).expand_as(inter)
    prev_iou = inter / union * hp
    lg = class_logits.float()
    logit_gap = (lg - lg.max(dim=1, keepdim=True).values) / 10.0
    class_prob = lg.softmax(dim=1)
    feats = (logit_gap, class_prob, area, rel_area, certainty, pos_cover, has_pos, neg_cover, has_neg, box_fill,
             outside_box, has_box, prev_iou, hp)
    return torch.stack(feats, dim=-1)


class QuerySelector(nn.Module):
    """Per-query features -> score; the highest-scoring query is the answer."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, masks: torch.Tensor, class_logits: torch.Tensor, dense: torch.Tensor, prev: torch.Tensor,
                has_prev: torch.Tensor) -> torch.Tensor:
        return self.score(query_features(masks, class_logits, dense, prev, has_prev))

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """(B, Q, F) -> (B, Q) scores."""
        return self.net(features).squeeze(-1)


def select_mask(selector: QuerySelector | None, masks: torch.Tensor, class_logits: torch.Tensor,
                dense: torch.Tensor, prev: torch.Tensor, has_prev: torch.Tensor) -> torch.Tensor:
    """(B, G, G) logits of the chosen query: the selector's pick, or the concept classifier's without one."""
    if selector is None:
        return best_mask(masks, class_logits)
    scores = selector(masks, class_logits, dense, prev, has_prev)
    idx = scores.argmax(dim=1)
    return masks[torch.arange(masks.shape[0], device=masks.device), idx]
