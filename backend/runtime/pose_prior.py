"""A person's mask from mediapipe's bundled pose model on crops placed by the user's prompts.

Crops (offline-models.md §2): the box + 15 % padding; around each of the first two positive points, crops of
several heights with the point at several heights in them. Of the masks found, the one that agrees with most of the
positive and negative points wins. The same recipe is the MediaPipe baseline of the evaluation
(`backend.eval.baselines.MediaPipeBaseline`) and the engine's first-round prior (`backend.runtime.engine`), which joins the
ISCN's mask through `join_prior`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from backend.dfimat.encoder import Letterbox, sample_rect
from backend.dfimat.prompts import Box, RoundPrompts
from backend.runtime.marks import agreeing, pixel, points

Rect = tuple[int, int, int, int]

BOX_PADDING = 0.15
# The engine's prior for a box alone is the mean of the pose model's masks on the box grown by BOX_PADDING and by
# these (where they find a person): mediapipe's outline moves with the crop around a person, and the mean of three
# crops is the steadier one (docs/experiments.md, "Pose prior", 2026-12-04: realistic-v3 validation +0.008
# [+0.004, +0.014] after one box). The MediaPipe baseline keeps the one crop of its recipe.
BOX_AVERAGE_PADDINGS = (0.08, 0.25)
# Likewise with marks and no box: the mean of the first three crops whose masks agree with every mark, instead of the
# first one (docs/experiments.md, "Pose prior": realistic-v3 validation clicks IoU@3 +0.005 [+0.001, +0.010]).
MARKS_AVERAGE_CROPS = 3
CROP_HEIGHTS = (1.0, 0.8, 0.6, 0.45)
CLICK_POSITIONS = (0.35, 0.55, 0.75)  # where in the crop's height the click sits
CROP_ASPECT = 0.75  # width / height
MIN_CROP = 16
# The prior joins the ISCN's coarse mask before the MRN as added log-odds, logit(coarse) + w * logit(prior): where both
# agree the mask stays as decided as it was (a weighted mean of probabilities left large half-transparent areas in the
# matte), where they disagree the stronger wins. The engine joins it twice: on the ISCN's grid (which places the
# matting crop and is kept for the CRM), and on the MRN's crop at the crop's resolution (the grid keeps a small
# person's outline only to a cell). w = 1.0: chosen over 0.5 on the validation mosaics by a rule written first, then
# confirmed on the held-out photos (docs/experiments.md, "Pose prior", 2026-12-03); 2.0 gained nothing more.
PRIOR_WEIGHT = 1.0
PRIOR_CLIP = 0.01  # probabilities are clipped to [0.01, 0.99] before their log-odds are taken


class PoseOnCrop:
    """mediapipe pose segmentation of one crop at a time: ``(image, rect) -> H x W float32 mask`` of the whole
    image, zero outside the crop. Calls are serialised (mediapipe graphs are not thread-safe). ``graph`` and ``lock``
    share an existing static-image pose graph with segmentation (the engine shares the people finder's, one graph per
    process); without them a new graph is built."""

    def __init__(self, graph: Any = None, lock: threading.Lock | None = None) -> None:
        if graph is None:
            try:
                import mediapipe as mp  # loading the TFLite graph costs a second: only when a prior is wanted
            except ImportError as exc:
                raise RuntimeError("the pose prior needs mediapipe 0.10.21 in the backend environment") from exc
            graph = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True)
        self._pose = graph
        self._lock = lock or threading.Lock()

    def close(self) -> None:
        self._pose.close()

    def __call__(self, image: np.ndarray, rect: Rect) -> np.ndarray:
        x0, y0, x1, y1 = rect
        h, w = image.shape[:2]
        alpha = np.zeros((h, w), np.float32)
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        with self._lock:
            result = self._pose.process(crop)
        if result.segmentation_mask is not None:
            alpha[y0:y1, x0:x1] = np.clip(result.segmentation_mask, 0.0, 1.0)
        return alpha


def box_pixels(box: Box, width: int, height: int) -> Rect:
    x0 = int(np.clip(np.floor(box.x0), 0, width - 1))
    y0 = int(np.clip(np.floor(box.y0), 0, height - 1))
    x1 = int(np.clip(np.ceil(box.x1), x0 + 1, width))
    y1 = int(np.clip(np.ceil(box.y1), y0 + 1, height))
    return x0, y0, x1, y1


def box_rect(box: Box, width: int, height: int) -> Rect | None:
    return padded_rect(box, BOX_PADDING, width, height)


def padded_rect(box: Box, padding: float, width: int, height: int) -> Rect | None:
    """The box grown by ``padding`` of its size on every side, in the image's pixels; None if too small."""
    x0, y0, x1, y1 = box_pixels(box.grown(*(padding,) * 4, width, height), width, height)
    return (x0, y0, x1, y1) if min(x1 - x0, y1 - y0) >= MIN_CROP else None


def click_rects(x: float, y: float, width: int, height: int) -> list[Rect]:
    rects: list[Rect] = []
    for frac in CROP_HEIGHTS:
        ch = frac * height
        cw = min(width, CROP_ASPECT * ch)
        for pos in CLICK_POSITIONS:
            x0 = float(np.clip(x - cw / 2, 0, width - cw))
            y0 = float(np.clip(y - pos * ch, 0, height - ch))
            rect = (int(x0), int(y0), int(min(width, x0 + cw)), int(min(height, y0 + ch)))
            if min(rect[2] - rect[0], rect[3] - rect[1]) >= MIN_CROP and rect not in rects:
                rects.append(rect)
    return rects


def covers_a_positive(alpha: np.ndarray, prompts: RoundPrompts) -> bool:
    """Whether the mask holds at least one positive click or stroke vertex (prompts in the mask's pixels)."""
    return any(alpha[pixel(alpha.shape, x, y)] > 0.5 for x, y, p in points(prompts) if p)


def agrees_with_all(alpha: np.ndarray, prompts: RoundPrompts) -> bool:
    """Whether every click and stroke vertex lies where the mask says it should: positive ones inside, negative ones
    outside (prompts in the mask's pixels)."""
    return agreeing(alpha, prompts) == len(points(prompts))


def pose_mask(prompts: RoundPrompts, width: int, height: int, on_crop: Callable[[Rect], np.ndarray],
              average_paddings: tuple[float, ...] = (), agreeing_crops: int = 1) -> np.ndarray:
    """H x W float32 person mask for ``prompts`` (a box and/or points), zeros when no crop holds a person.
    ``on_crop(rect)`` runs the pose model on one crop (callers cache it per image). With a box and no marks,
    ``average_paddings`` adds crops of the box grown by those fractions, and the masks that find a person are
    averaged (`BOX_AVERAGE_PADDINGS`). With marks and no box, the masks of the first ``agreeing_crops`` crops that
    agree with every mark are averaged (`MARKS_AVERAGE_CROPS`); if none agrees, the one that agrees most wins."""
    pts = points(prompts)
    positives = [(x, y) for x, y, p in pts if p]

    candidates: list[Rect] = []
    if prompts.box is not None:
        rect = box_rect(prompts.box, width, height)
        if rect is not None:
            candidates.append(rect)
    for x, y in positives[:2]:  # the first clicks place the person; later ones are corrections
        candidates += [r for r in click_rects(x, y, width, height) if r not in candidates]
    best, best_score = np.zeros((height, width), np.float32), -1
    agree_all: list[np.ndarray] = []
    for rect in candidates:
        alpha = on_crop(rect)
        if not alpha.any():
            continue
        s = agreeing(alpha, prompts)
        if s > best_score:
            best, best_score = alpha, s
        if s == len(pts) and prompts.box is None:
            agree_all.append(alpha)
            if len(agree_all) >= agreeing_crops:
                break  # enough crops agree with everything the user said
        elif s == len(pts) and rect == candidates[0]:
            break  # the box's own crop agrees with every mark: no need to try more crops
    if agree_all:
        return np.mean(agree_all, axis=0).astype(np.float32)
    if average_paddings and prompts.box is not None and not pts and best.any():
        rects = [padded_rect(prompts.box, pad, width, height) for pad in average_paddings]
        found = [m for m in (on_crop(r) for r in rects if r is not None) if m.any()]
        return np.mean([best, *found], axis=0).astype(np.float32)
    return best.copy()


def with_centred(mask: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """A box's prior from mediapipe's ``mask`` and BlazePose's ``centred`` mask of the person centred on the box: their
    mean, or ``centred`` alone where mediapipe found nobody in the box's crops (``mask`` nowhere above 0.5)."""
    return centred if mask.max() <= 0.5 else 0.5 * (mask + centred)


def release_prior(prior: tuple[np.ndarray, float], own: np.ndarray, lb: Letterbox,
                  prompts: RoundPrompts) -> tuple[np.ndarray, float]:
    """The kept prior with what a contradicting mark points at handed back to the ISCN: the region where the prior
    and the ISCN's new grid ``own`` (G x G on ``lb``'s square, the whole image) disagree and the mark lies is set to
    0.5 (no opinion, so the join leaves the ISCN's answer there); where the ISCN contradicts the mark too, a disk of
    one grid cell around it. Elsewhere the prior keeps the detail the user saw in the earlier rounds (dropping it
    whole made the matte worse after a correction)."""
    mask, f = prior
    h, w = mask.shape
    iscn = lb.square_to_crop(own, (0, 0, lb.width, lb.height), (h, w))
    disagree = ((iscn > 0.5) != (mask > 0.5)).astype(np.uint8)
    _, labels = cv2.connectedComponents(disagree, connectivity=8)
    out = mask.copy()
    cell = max(1, int(round(lb.size / own.shape[0] / lb.scale * f)))
    for x, y, positive in points(prompts.scaled(f, f)):
        r, c = pixel(mask.shape, x, y)
        if (mask[r, c] > 0.5) == positive:
            continue
        if labels[r, c]:
            out[labels == labels[r, c]] = 0.5
        else:
            cv2.circle(out, (c, r), cell, 0.5, -1)
    return out, f


# -- joining the prior with the network's mask --------------------------------------------------------------------
def mix_prior(grid: np.ndarray, prior: tuple[np.ndarray, float], lb: Letterbox) -> np.ndarray:
    """`grid` (G x G probability on `lb`'s square: whole image or focus region) joined with the pose prior sampled
    at the grid's cell centres (`PRIOR_WEIGHT`); cells outside the pose model's crop count as its "no person"."""
    mask, f = prior
    g = grid.shape[0]
    centres = (np.arange(g, dtype=np.float32) + 0.5) * (lb.size / g)
    xx, yy = np.meshgrid(centres, centres)
    xy = lb.to_image(np.stack([xx.ravel(), yy.ravel()], axis=1)) * f
    sampled = cv2.remap(mask, xy[:, 0].reshape(g, g).astype(np.float32), xy[:, 1].reshape(g, g).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return join_prior(grid, sampled)


def join_prior(own: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The ISCN's probability and the pose prior's as added log-odds (`PRIOR_WEIGHT`); MRN training joins them the
    same way (`backend.train.mrn`)."""
    return (1.0 / (1.0 + np.exp(-(_logit(own) + PRIOR_WEIGHT * _logit(prior))))).astype(np.float32)


def prior_on_rect(prior: tuple[np.ndarray, float], rect: tuple[int, int, int, int],
                   out_hw: tuple[int, int]) -> np.ndarray:
    """The pose prior (mask of the photo downscaled by f, and f) sampled over the photo's pixel rectangle ``rect`` at
    ``out_hw``; beyond the mask's edge it says "no person"."""
    mask, f = prior
    return sample_rect(mask, f, rect, out_hw, border=cv2.BORDER_CONSTANT)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, PRIOR_CLIP, 1.0 - PRIOR_CLIP)
    return np.log(p / (1.0 - p))
