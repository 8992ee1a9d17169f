"""Rendering people as canvas layers and blending them, back to front.

A layer is a full-canvas colour image and a soft alpha. Pasted people get a feathered alpha (the only soft edges
in the data: the source masks are binary), scene people keep their own pixels so a pasted person can stand behind
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from backend.synth.cutouts import Cutout
from backend.synth.placement import PersonBox

HEAD_FRACTION = 0.15


@dataclass
class Layer:
    """One person on the canvas. ``depth`` orders layers: larger is nearer the camera (lower feet)."""

    rgb: np.ndarray
    alpha: np.ndarray
    box: PersonBox
    depth: float
    source: str
    origin: str
    ignore: bool = False
    alpha_kind: str = "binary"

    def head_alpha(self) -> np.ndarray:
        """The alpha restricted to the top of the person's box, where the head is for an upright person."""
        out = np.zeros_like(self.alpha)
        y0 = max(0, int(round(self.box.y0)))
        y1 = max(y0, int(round(self.box.y0 + HEAD_FRACTION * self.box.height)))
        out[y0:y1] = self.alpha[y0:y1]
        return out


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Soft alpha from a (possibly area-resampled) mask.

    Choking the edge first drops the fringe that still carries the source photo's background colour; the blur then
    gives a hair-width soft transition like a real matte's.
    """
    choked = np.clip((mask.astype(np.float32) - 0.25) / 0.75, 0.0, 1.0)
    if sigma <= 0:
        return choked
    return cv2.GaussianBlur(choked, (0, 0), sigmaX=sigma, sigmaY=sigma)


def feather_sigma(height_px: float) -> float:
    """Edge softness grows slowly with the person's size (hair strands span more pixels on a bigger person)."""
    return float(np.clip(0.5 + height_px / 500.0, 0.6, 1.6))


def render_cutout(
    cutout: Cutout, box: PersonBox, canvas_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The cutout scaled into ``box`` on an empty canvas: (rgb float32 HxWx3 in [0, 255], alpha float32 HxW)."""
    h, w = canvas_hw
    bw, bh = max(1, int(round(box.width))), max(1, int(round(box.height)))
    shrinking = bh < cutout.height
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    rgb = cv2.resize(cutout.rgb, (bw, bh), interpolation=interp).astype(np.float32)
    mask = cv2.resize(cutout.mask, (bw, bh), interpolation=interp)
    alpha = feather(mask, feather_sigma(bh))
    canvas_rgb = np.zeros((h, w, 3), np.float32)
    canvas_a = np.zeros((h, w), np.float32)
    x0, y0 = int(round(box.x0)), int(round(box.y0))
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(w, x0 + bw), min(h, y0 + bh)
    if cx1 <= cx0 or cy1 <= cy0:
        return canvas_rgb, canvas_a
    src = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    canvas_rgb[cy0:cy1, cx0:cx1] = rgb[src]
    canvas_a[cy0:cy1, cx0:cx1] = alpha[src]
    return canvas_rgb, canvas_a


def scene_layer(image: np.ndarray, mask: np.ndarray, box: PersonBox, source: str, ignore: bool) -> Layer:
    """A person already in the scene: their own pixels, a lightly softened copy of their binary mask."""
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=0.7)
    # Inside the labelled mask the person stays fully opaque: softening only spreads outward by a fraction.
    alpha = np.maximum(alpha, mask.astype(np.float32) * (alpha >= 0.5))
    return Layer(image.astype(np.float32), alpha, box, box.foot_y, source, "scene", ignore, "binary")


def blend(
    background: np.ndarray, layers: Sequence[Layer], shadows: Sequence[np.ndarray | None] | None = None
):
    """Composite ``layers`` (sorted back to front) over ``background``; optional per-layer shadow maps darken the
    canvas just before that layer is drawn. Returns uint8 RGB."""
    canvas = background.astype(np.float32).copy()
    for i, layer in enumerate(layers):
        if shadows is not None and shadows[i] is not None:
            canvas *= (1.0 - shadows[i])[..., None]
        a = layer.alpha[..., None]
        canvas = canvas * (1.0 - a) + layer.rgb * a
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
