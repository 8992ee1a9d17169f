"""Make a pasted person look lit by the scene they are pasted into.

Colour and brightness statistics are moved part of the way towards those of the scene around the paste location,
in CIE Lab so that brightness (L) and colour cast (a, b) are adjusted separately. Only part of the way: a full
transfer would paint a person in a red coat the colour of a grey wall. A soft contact shadow under the feet ties
the person to the ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from backend.synth.placement import PersonBox


@dataclass(frozen=True)
class HarmonizeParams:
    """How far the person's Lab mean moves towards the surroundings' (0 = not at all, 1 = fully)."""

    l_shift: float = 0.35
    ab_shift: float = 0.25
    l_contrast_power: float = 0.5
    l_contrast_clip: tuple[float, float] = (0.8, 1.25)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb / 255.0, 0, 1).astype(np.float32), cv2.COLOR_RGB2LAB)


def surround_mask(
    box: PersonBox, shape: tuple[int, int], occupied: np.ndarray, grow: float = 0.6
) -> np.ndarray:
    """Scene pixels around the paste box (the box grown by ``grow`` of its size), without any person."""
    h, w = shape
    dx, dy = grow * box.width / 2, grow * box.height / 2
    x0, x1 = int(max(0, box.x0 - dx)), int(min(w, box.x1 + dx))
    y0, y1 = int(max(0, box.y0 - dy)), int(min(h, box.y1 + dy))
    out = np.zeros(shape, bool)
    out[y0:y1, x0:x1] = True
    return out & ~occupied


def transfer_lab(
    person_rgb: np.ndarray,
    person_alpha: np.ndarray,
    scene_rgb: np.ndarray,
    region: np.ndarray,
    params: HarmonizeParams = HarmonizeParams(),
) -> np.ndarray:
    """Person colours (float HxWx3, 0..255) moved towards the statistics of ``scene_rgb`` inside ``region``.

    Pixels outside the person are returned unchanged; with fewer than 50 pixels on either side there are no
    reliable statistics and the person is returned unchanged.
    """
    inside = person_alpha >= 0.5
    if inside.sum() < 50 or region.sum() < 50:
        return person_rgb
    p_lab = _lab(person_rgb)
    s_lab = _lab(scene_rgb.astype(np.float32))
    p_vals, s_vals = p_lab[inside], s_lab[region]
    p_mean, s_mean = p_vals.mean(axis=0), s_vals.mean(axis=0)
    p_std, s_std = p_vals.std(axis=0) + 1e-3, s_vals.std(axis=0) + 1e-3
    out = p_lab.copy()
    ratio = float(np.clip((s_std[0] / p_std[0]) ** params.l_contrast_power, *params.l_contrast_clip))
    target_l = p_mean[0] + params.l_shift * (s_mean[0] - p_mean[0])
    out[..., 0] = (p_lab[..., 0] - p_mean[0]) * ratio + target_l
    for c in (1, 2):
        out[..., c] = p_lab[..., c] + params.ab_shift * (s_mean[c] - p_mean[c])
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0
    keep = (person_alpha > 0)[..., None]
    return np.where(keep, rgb, person_rgb).astype(np.float32)


def contact_shadow(box: PersonBox, shape: tuple[int, int], strength: float) -> np.ndarray:
    """Darkening map (0..strength) of a soft ellipse under the feet of ``box``."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    centre = (int(round(box.cx)), int(round(box.foot_y - 0.01 * box.height)))
    axes = (max(2, int(0.42 * box.width)), max(1, int(0.035 * box.height)))
    cv2.ellipse(out, centre, axes, 0, 0, 360, 1.0, thickness=-1)
    sigma = max(1.0, 0.02 * box.height)
    out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma)
    return (out * strength).astype(np.float32)
