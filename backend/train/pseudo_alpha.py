"""PSEUDO ground-truth alpha for people, made from binary masks by closed-form matting.

No set here has real alpha mattes, only binary person masks. To give the refinement network (MRN) a soft target,
we assume the binary edge is right to within a band and let closed-form matting (Levin et al. 2008, via pymatting)
decide the alpha *inside that band only*: pixels deeper than the band inside the mask are 1, pixels farther than the
band outside are 0. The result is a plausible matte that follows image edges (hair, collars), not a measurement —
call it pseudo ground truth wherever it is used or reported.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["default_band", "trimap_from_mask", "pseudo_alpha"]

# Long side of the region that closed-form matting solves at; larger crops are matted downscaled.
WORK_SIDE = 400
BAND_FRACTION = 0.025  # of the person's longer bounding-box side
MIN_BAND, MAX_BAND = 3, 40


def _distance(mask: np.ndarray) -> np.ndarray:
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)


def default_band(mask: np.ndarray) -> int:
    """Half-width in pixels of the unknown band: 2.5 % of the person's size, clipped to 3..40 px."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    size = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    return int(np.clip(round(BAND_FRACTION * size), MIN_BAND, MAX_BAND))


def trimap_from_mask(mask: np.ndarray, band: float) -> np.ndarray:
    """Trimap (0 background, 0.5 unknown, 1 foreground) with an unknown band of ``band`` px each side of the edge.

    Inside, the band never eats the whole person: on a part thinner than the band, its medial half stays certain.
    """
    mask = np.asarray(mask, bool)
    inside = _distance(mask)
    outside = _distance(~mask)
    inner_band = min(float(band), 0.5 * float(inside.max()))
    trimap = np.full(mask.shape, 0.5, np.float64)
    trimap[inside > inner_band] = 1.0
    trimap[outside > band] = 0.0
    return trimap


def pseudo_alpha(image: np.ndarray, mask: np.ndarray, band: float | None = None) -> np.ndarray:
    """PSEUDO ground-truth alpha (H x W float32 in [0, 1]) for the person ``mask`` in ``image`` (H x W x 3 uint8).

    Closed-form matting on a trimap made from the mask (unknown band ``band`` px each side, default scaled to the
    person); the work is done on the person's crop, downscaled when its long side exceeds ``WORK_SIDE`` px.
    This is not real alpha ground truth: the binary mask is trusted everywhere except the band.
    """
    from pymatting import estimate_alpha_cf  # lazy: its first import compiles numba kernels

    image = np.asarray(image)
    mask = np.asarray(mask).astype(bool)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    if not mask.any():
        raise ValueError("mask is empty: there is no person to matte")
    if band is None:
        band = default_band(mask)
    if not np.isfinite(band) or band <= 0:
        raise ValueError(f"band must be a positive number of pixels, got {band}")

    full_trimap = trimap_from_mask(mask, band)
    alpha = (full_trimap == 1.0).astype(np.float32)
    unknown = full_trimap == 0.5
    if not unknown.any():
        return alpha

    # Solve only around the person: a margin of a band beyond the unknown region gives the solver known pixels.
    rows = np.flatnonzero(unknown.any(axis=1))
    cols = np.flatnonzero(unknown.any(axis=0))
    pad = int(np.ceil(band)) + 2
    h, w = mask.shape
    r0, r1 = max(0, rows[0] - pad), min(h, rows[-1] + 1 + pad)
    c0, c1 = max(0, cols[0] - pad), min(w, cols[-1] + 1 + pad)
    crop = image[r0:r1, c0:c1].astype(np.float64) / 255.0
    crop_mask = mask[r0:r1, c0:c1]
    scale = min(1.0, WORK_SIDE / max(crop.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        work_image = np.clip(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)
        work_mask = cv2.resize(crop_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        if not work_mask.any():
            work_mask = cv2.resize(crop_mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        work_trimap = trimap_from_mask(work_mask, max(1.5, band * scale))
    else:
        work_image, work_trimap = crop, full_trimap[r0:r1, c0:c1]

    if (work_trimap == 1.0).any() and (work_trimap == 0.0).any():
        solved = estimate_alpha_cf(work_image, work_trimap)
    else:
        # Without both certain regions the solver has nothing to anchor to; keep the mask edge.
        solved = np.where(work_trimap == 0.5, cv2.resize(crop_mask.astype(np.float64), work_trimap.shape[::-1]),
                          work_trimap)
    if scale < 1.0:
        solved = cv2.resize(solved, (c1 - c0, r1 - r0), interpolation=cv2.INTER_LINEAR)
    region = unknown[r0:r1, c0:c1]
    alpha[r0:r1, c0:c1][region] = np.clip(solved[region], 0.0, 1.0).astype(np.float32)
    return alpha
