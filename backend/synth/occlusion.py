"""Depth order and what stays visible of each person.

Layers are drawn back to front (nearer = lower feet). A pixel's label is the nearest person whose alpha there is
at least 0.5, so every person pixel belongs to exactly one person and occluded parts drop out of the masks behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backend.synth.compose import Layer

IGNORE = 255


def depth_order(layers: Sequence[Layer]) -> list[int]:
    """Indices of ``layers`` from the farthest to the nearest (stable for equal depth)."""
    return sorted(range(len(layers)), key=lambda i: layers[i].depth)


def visible_alphas(ordered: Sequence[Layer]) -> list[np.ndarray]:
    """Soft visible alpha of each layer (``ordered`` back to front): its alpha times what the nearer ones let through."""
    out: list[np.ndarray] = [np.empty(0)] * len(ordered)
    transmit = np.ones_like(ordered[0].alpha) if ordered else None
    for i in range(len(ordered) - 1, -1, -1):
        out[i] = ordered[i].alpha * transmit
        transmit = transmit * (1.0 - ordered[i].alpha)
    return out


def label_map(ordered: Sequence[Layer], labels: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """uint8 instance map: 0 background, the given label (1..N or 255) of the nearest layer with alpha >= 0.5."""
    if len(ordered) != len(labels):
        raise ValueError("one label per layer is required")
    out = np.zeros(shape, np.uint8)
    for layer, value in zip(ordered, labels, strict=True):
        out[layer.alpha >= 0.5] = value
    return out
