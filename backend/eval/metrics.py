"""Scores for one predicted alpha against one person's binary mask, whole image, ignore pixels excluded.

Conventions (``dfimat-reference.md`` §5):

* IoU thresholds alpha at 0.5; boundary F-score matches mask edges within 3 px; leak = alpha mass on the other
  labelled people / target area.
* SAD (sum |a - g| / 1000), MSE (mean squared error, raw; print it x 1e3), GRAD (Gaussian-derivative filters,
  sigma 1.4, sum of squared magnitude differences / 1000) and CONN (thresholds 0.1 .. 1.0, largest 4-connected
  component of both mattes above the threshold — the *foreground* component, never the background label —,
  phi = 1 - d [d >= 0.15], sum |phi_p - phi_g| / 1000) are computed over the whole image.
  Our data has only binary masks, so these four are scored **against a binary mask**: they measure agreement with the
  mask, not matting quality, and every report must say so (:data:`VS_BINARY_NOTE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "VS_BINARY_NOTE",
    "iou",
    "boundary_f",
    "leak",
    "error_split",
    "sad",
    "mse",
    "grad",
    "conn",
    "noc",
    "matting_vs_binary",
    "person_scores",
]

VS_BINARY_NOTE = "vs binary mask (no alpha ground truth): agreement with the mask, not matting quality"


def _valid(shape: tuple[int, ...], ignore: np.ndarray | None) -> np.ndarray:
    if ignore is None:
        return np.ones(shape, bool)
    ignore = np.asarray(ignore, bool)
    if ignore.shape != shape:
        raise ValueError(f"ignore mask {ignore.shape} and prediction {shape} differ in shape")
    return ~ignore


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt).astype(np.float64)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be equal 2-D shapes")
    if not np.isfinite(pred).all():
        raise ValueError("prediction contains non-finite values")
    return pred, gt


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None, threshold: float = 0.5) -> float:
    """Intersection over union of ``pred >= threshold`` and ``gt >= 0.5``; 1.0 when both are empty."""
    pred, gt = _pair(pred, gt)
    valid = _valid(pred.shape, ignore)
    p = (pred >= threshold) & valid
    g = (gt >= 0.5) & valid
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def _edge(mask: np.ndarray) -> np.ndarray:
    # Erosion pads with "inside", so a person cut by the frame has no edge along the frame.
    return mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def boundary_f(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None, tolerance: float = 3.0,
               threshold: float = 0.5) -> float:
    """F-score of mask edges: an edge pixel counts as matched within ``tolerance`` px of the other's edge."""
    pred, gt = _pair(pred, gt)
    valid = _valid(pred.shape, ignore)
    pe = _edge(pred >= threshold) & valid
    ge = _edge(gt >= 0.5) & valid
    n_p, n_g = np.count_nonzero(pe), np.count_nonzero(ge)
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    to_g = cv2.distanceTransform((~ge).astype(np.uint8), cv2.DIST_L2, 5)
    to_p = cv2.distanceTransform((~pe).astype(np.uint8), cv2.DIST_L2, 5)
    precision = np.count_nonzero(to_g[pe] <= tolerance) / n_p
    recall = np.count_nonzero(to_p[ge] <= tolerance) / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def leak(alpha: np.ndarray, others: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Alpha mass on the other labelled people divided by the target's area (0 = nothing spilt)."""
    alpha, target_f = _pair(alpha, target)
    others = np.asarray(others, bool)
    if others.shape != alpha.shape:
        raise ValueError(f"others mask {others.shape} and prediction {alpha.shape} differ in shape")
    valid = _valid(alpha.shape, ignore)
    area = np.count_nonzero((target_f >= 0.5) & valid)
    if area == 0:
        raise ValueError("target mask is empty: leak is undefined")
    return float(alpha[others & valid].sum() / area)


OUTLINE_BAND = 3.0  # px: as boundary F's tolerance; coco128-persons' polygon outlines are often off by this much
SHAPE_BAND = 15.0  # px: about two cells of the ISCN's 96-cell grid on a 640 px photo: a coarse outline's reach


def _to_outline(mask: np.ndarray) -> np.ndarray:
    """Per pixel, the distance to the mask's outline: inside to the nearest outside pixel and vice versa (inf
    everywhere when the mask is empty or full, i.e. has no outline)."""
    if mask.all() or not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    m8 = mask.astype(np.uint8)
    return np.where(mask, cv2.distanceTransform(m8, cv2.DIST_L2, 5), cv2.distanceTransform(1 - m8, cv2.DIST_L2, 5))


def error_split(alpha: np.ndarray, gt: np.ndarray, others: np.ndarray, ignore: np.ndarray | None = None,
                threshold: float = 0.5) -> dict[str, float]:
    """Where the wrong pixels of ``alpha >= threshold`` are, each as a share of the union with the target, so that
    IoU + outline + shape + others + rest = 1. ``outline``: within `OUTLINE_BAND` px of both the label's and the
    prediction's outline (label noise and edge quality); ``shape``: within `SHAPE_BAND` px of both (a coarse
    outline: a gap between arm and body filled, a hand cut short); ``others``: any other wrong pixel on another
    labelled person (selection); ``rest``: all else (missed parts, objects and background taken in). Tells whether
    a model needs better edges or better selection."""
    pred, gt_f = _pair(alpha, gt)
    others = np.asarray(others, bool)
    if others.shape != pred.shape:
        raise ValueError(f"others mask {others.shape} and prediction {pred.shape} differ in shape")
    valid = _valid(pred.shape, ignore)
    p, g = pred >= threshold, gt_f >= 0.5
    keys = ("outline", "shape", "others", "rest")
    union = np.count_nonzero((p | g) & valid)
    if union == 0:
        return dict.fromkeys(keys, 0.0)
    wrong = (p ^ g) & valid
    # Near both outlines, not just the label's: a person missed altogether is a selection error along its edge too.
    apart = np.maximum(_to_outline(g), _to_outline(p))
    outline = wrong & (apart <= OUTLINE_BAND)
    shape = wrong & ~outline & (apart <= SHAPE_BAND)
    on_others = wrong & ~outline & ~shape & p & others
    rest = wrong & ~outline & ~shape & ~on_others
    return {k: np.count_nonzero(m) / union for k, m in zip(keys, (outline, shape, on_others, rest), strict=True)}


def sad(alpha: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Sum of absolute differences over the valid pixels, / 1000."""
    alpha, gt = _pair(alpha, gt)
    return float(np.abs(alpha - gt)[_valid(alpha.shape, ignore)].sum() / 1000.0)


def mse(alpha: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Mean squared difference over the valid pixels (raw; reports print it x 1e3)."""
    alpha, gt = _pair(alpha, gt)
    valid = _valid(alpha.shape, ignore)
    return float(((alpha - gt) ** 2)[valid].mean()) if valid.any() else 0.0


def _gauss_grad_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    # Half size where the Gaussian falls below 1 % of its peak scale: 4 for sigma 1.4 (9 x 9 kernels).
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2 * math.pi) * sigma * 0.01)))
    t = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(t**2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    dgauss = -t * gauss / sigma**2
    kx = np.outer(gauss, dgauss)  # rows smooth along y, columns differentiate along x
    kx /= math.sqrt((kx**2).sum())
    return kx, kx.T


def _grad_mag(image: np.ndarray, sigma: float) -> np.ndarray:
    kx, ky = _gauss_grad_kernels(sigma)
    # filter2D correlates; flipping the kernels makes it the convolution of the reference (edge-replicated,
    # i.e. scipy's mode="nearest"), at a fraction of scipy's cost on megapixel mattes.
    gx = cv2.filter2D(image, cv2.CV_64F, cv2.flip(kx, -1), borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(image, cv2.CV_64F, cv2.flip(ky, -1), borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx**2 + gy**2)


def grad(alpha: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None, sigma: float = 1.4) -> float:
    """Gradient error: sum over valid pixels of (|grad a| - |grad g|)^2, / 1000."""
    alpha, gt = _pair(alpha, gt)
    diff = (_grad_mag(alpha, sigma) - _grad_mag(gt, sigma)) ** 2
    return float(diff[_valid(alpha.shape, ignore)].sum() / 1000.0)


def _largest_foreground_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    # Label 0 is the background; counting it (the GCA/MAM port's bug) would pick the background when it is larger.
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def conn(alpha: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None, step: float = 0.1) -> float:
    """Connectivity error, / 1000, with the largest *foreground* component at each threshold."""
    alpha, gt = _pair(alpha, gt)
    n_steps = int(round(1.0 / step))
    level = np.full(alpha.shape, -1.0)  # last threshold at which each pixel was still connected
    for k in range(1, n_steps + 1):
        t = k * step  # compared with a 1e-6 slack: 3 * 0.1 is 0.30000000000000004, and alphas come from 8 bits
        connected = _largest_foreground_component((alpha >= t - 1e-6) & (gt >= t - 1e-6))
        dropped = (level < 0) & ~connected
        level[dropped] = (k - 1) * step
    level[level < 0] = 1.0
    d_p = alpha - level
    d_g = gt - level
    phi_p = 1.0 - d_p * (d_p >= 0.15)
    phi_g = 1.0 - d_g * (d_g >= 0.15)
    return float(np.abs(phi_p - phi_g)[_valid(alpha.shape, ignore)].sum() / 1000.0)


def noc(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach ``threshold`` IoU; ``ious[k]`` is the IoU after k + 1 clicks.

    Never reached (or fewer than ``max_clicks`` recorded without reaching it) counts as ``max_clicks``.
    """
    for k, value in enumerate(ious[:max_clicks]):
        if value >= threshold:
            return k + 1
    return max_clicks


def matting_vs_binary(alpha: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> dict[str, float | str]:
    """SAD, MSE, GRAD and CONN of ``alpha`` against a BINARY mask, labelled as such."""
    return {
        "sad": sad(alpha, gt, ignore),
        "mse": mse(alpha, gt, ignore),
        "grad": grad(alpha, gt, ignore),
        "conn": conn(alpha, gt, ignore),
        "reference": VS_BINARY_NOTE,
    }


def person_scores(alpha: np.ndarray, gt: np.ndarray, others: np.ndarray | None = None,
                  ignore: np.ndarray | None = None, matting: bool = True) -> dict[str, float | str]:
    """All per-person scores of one prediction: IoU, boundary F, leak and (optionally) the vs-binary errors."""
    scores: dict[str, float | str] = {"iou": iou(alpha, gt, ignore), "boundary_f": boundary_f(alpha, gt, ignore)}
    scores["leak"] = leak(alpha, others, gt, ignore) if others is not None else 0.0
    if matting:
        scores.update(matting_vs_binary(alpha, gt, ignore))
    return scores
