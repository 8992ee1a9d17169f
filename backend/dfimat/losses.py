"""Training losses.

Eq. 6 (ISCN): L = 0.1 * CE(concept logits, matched query) + 1 * BCE(mask) + 1 * Dice(mask); the target query is the
one whose mask matches the ground truth best (lowest BCE + Dice), as in set matching with a single target.
Eq. 7 (MRN): mean L1 over all pixels + lambda * mean L1 over the hardest 30 % pixels (largest error), lambda = 1.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CLASS_WEIGHT, BCE_WEIGHT, DICE_WEIGHT = 0.1, 1.0, 1.0


def dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-mask soft dice loss over the last two dims; logits/target (…, H, W) -> (…)."""
    p = logits.sigmoid()
    w = torch.ones_like(target) if weight is None else weight
    inter = (p * target * w).flatten(-2).sum(-1)
    denom = ((p + target) * w).flatten(-2).sum(-1)
    return 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)


def bce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-mask mean BCE over the last two dims; `weight` zeroes ignored pixels."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if weight is None:
        return loss.flatten(-2).mean(-1)
    return (loss * weight).flatten(-2).sum(-1) / weight.flatten(-2).sum(-1).clamp(min=1.0)


def iscn_loss(masks: torch.Tensor, class_logits: torch.Tensor, target: torch.Tensor,
              weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """masks (B, Q, H, W) logits; class_logits (B, Q); target (B, H, W) in [0, 1]; weight (B, H, W) or None."""
    tq = target.unsqueeze(1).expand_as(masks)
    wq = None if weight is None else weight.unsqueeze(1).expand_as(masks)
    with torch.no_grad():
        cost = bce_loss(masks, tq, wq) + dice_loss(masks, tq, wq)
        matched = cost.argmin(dim=1)
    rows = torch.arange(masks.shape[0], device=masks.device)
    m = masks[rows, matched]
    bce = bce_loss(m, target, weight).mean()
    dice = dice_loss(m, target, weight).mean()
    ce = F.cross_entropy(class_logits, matched)
    total = CLASS_WEIGHT * ce + BCE_WEIGHT * bce + DICE_WEIGHT * dice
    return total, {"ce": float(ce.detach()), "bce": float(bce.detach()), "dice": float(dice.detach())}


def hard_l1_loss(pred: torch.Tensor, target: torch.Tensor, hard_frac: float = 0.3, lam: float = 1.0) -> torch.Tensor:
    """Eq. 7 over a batch (B, 1, H, W) or (B, H, W): L1 over all pixels + lam * L1 over the top `hard_frac` pixels."""
    err = (pred - target).abs().flatten(1)
    k = max(1, int(round(err.shape[1] * hard_frac)))
    hard = err.topk(k, dim=1).values
    return err.mean() + lam * hard.mean()
