"""The user's marks hold in the matte: a positive click or stroke ends up inside it, a negative one outside.

Why: the MRN sees only the image crop and the coarse mask, not the marks. On the held-out photos the final matte
contradicted 19 % of corrective clicks (rounds 2-6), and in 87 of those 125 cases the ISCN's coarse mask had obeyed
the click: the refinement undid it. The simulated user (and a real one) then clicks the same spot again, and the
next rounds stall (docs/experiments.md, "Marks and corrective rounds").

What is kept, per mark in the order given (a later mark wins where two overlap):
  * a click: a disk around it, as large as the region around the click where the coarse mask already agrees with it
    (up to `MAX_RADIUS_CELLS` cells of the ISCN grid), and at least `MIN_RADIUS_CELLS` cells where it does not;
  * a stroke: the painted stroke itself (its polyline at its width).
Inside that footprint the matte is raised to 1 (positive) or lowered to 0 (negative), with a one-pixel soft rim.

Before that, in sessions without a box, `drop_unmarked_parts` removes the parts of the matte (connected alpha > 0.5)
that hold none of the positive marks: the user's person is where they clicked or painted, and a separate blob is
someone or something else (a neighbour in another part of the photo, a patch of background).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from backend.dfimat.prompts import PromptHistory, RoundPrompts

Rect = tuple[int, int, int, int]
# Coarse probability over an image rectangle (x0, y0, x1, y1), one value per image pixel.
CoarseOn = Callable[[Rect], np.ndarray]

MAX_RADIUS_CELLS = 4.0
MIN_RADIUS_CELLS = 0.5


def points(prompts: RoundPrompts) -> list[tuple[float, float, bool]]:
    """Clicks and scribble vertices as (x, y, positive)."""
    out = [(c.x, c.y, c.positive) for c in prompts.clicks]
    for s in prompts.scribbles:
        out += [(x, y, s.positive) for x, y in s.points]
    return out


def pixel(shape: tuple[int, ...], x: float, y: float) -> tuple[int, int]:
    """(row, col) of the pixel a mark at image coordinates (x, y) lies on; x == width is the last column."""
    return min(shape[0] - 1, int(y)), min(shape[1] - 1, int(x))


def agreeing(alpha: np.ndarray, prompts: RoundPrompts) -> int:
    """How many of the clicks and stroke vertices ``alpha`` puts on their side (> 0.5 for positive ones)."""
    return sum(int((alpha[pixel(alpha.shape, x, y)] > 0.5) == p) for x, y, p in points(prompts))


def click_radius(agrees: np.ndarray, centre: tuple[int, int], cap: float) -> float:
    """Distance from ``centre`` (col, row) to the nearest pixel of ``agrees`` that is False, capped; 0 when the
    centre itself disagrees."""
    col, row = centre
    if not agrees[row, col]:
        return 0.0
    padded = np.pad(agrees.astype(np.uint8), 1, constant_values=1)  # the window's edge is not a disagreement
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return float(min(dist[row, col], cap))


def _paint(alpha: np.ndarray, footprint: np.ndarray, rect: Rect, positive: bool) -> None:
    """Raise (positive) or lower the matte to ``footprint`` (coverage in [0, 1], float or uint8 of 255) over rect."""
    x0, y0, x1, y1 = rect
    view = alpha[y0:y1, x0:x1]
    on = footprint > 0  # only the covered pixels: a long stroke's bounding box on a 24 MP photo is large
    cover = footprint[on].astype(np.float32) / (255.0 if footprint.dtype == np.uint8 else 1.0)
    view[on] = np.maximum(view[on], cover) if positive else np.minimum(view[on], 1.0 - cover)


def _disk(alpha: np.ndarray, x: float, y: float, radius: float, positive: bool) -> None:
    h, w = alpha.shape
    reach = int(np.ceil(radius)) + 1
    x0, y0 = max(0, int(x) - reach), max(0, int(y) - reach)
    x1, y1 = min(w, int(x) + reach + 1), min(h, int(y) + reach + 1)
    if x0 >= x1 or y0 >= y1:
        return
    cols = np.arange(x0, x1, dtype=np.float32) + 0.5 - x
    rows = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - y
    footprint = np.clip(radius + 0.5 - np.sqrt(cols ** 2 + rows ** 2), 0.0, 1.0)
    _paint(alpha, footprint, (x0, y0, x1, y1), positive)


def _stroke(alpha: np.ndarray, points: tuple[tuple[float, float], ...], width: float, positive: bool) -> None:
    h, w = alpha.shape
    pts = np.asarray(points, np.float32)
    reach = width / 2 + 2
    x0, y0 = max(0, int(pts[:, 0].min() - reach)), max(0, int(pts[:, 1].min() - reach))
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max() + reach)) + 1), min(h, int(np.ceil(pts[:, 1].max() + reach)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    shifted = np.round((pts - [x0, y0]) * 16).astype(np.int32).reshape(-1, 1, 2)  # 4 fractional bits
    thickness = max(1, int(round(width)))
    if len(shifted) == 1:
        cv2.circle(canvas, tuple(int(v) for v in shifted[0, 0]), thickness * 8, 255, -1, cv2.LINE_AA, 4)
    else:
        cv2.polylines(canvas, [shifted], False, 255, thickness, cv2.LINE_AA, 4)
    _paint(alpha, canvas, (x0, y0, x1, y1), positive)


def keep_marks(alpha: np.ndarray, history: PromptHistory, coarse_on: CoarseOn, cell: float) -> np.ndarray:
    """Make every click and stroke of ``history`` hold in ``alpha`` (H x W, changed in place and returned).

    ``coarse_on`` samples the coarse mask the matte was refined from; ``cell`` is one ISCN grid cell in image
    pixels (the coarse mask's resolution), which sets the click disks' sizes."""
    h, w = alpha.shape
    cap, floor = MAX_RADIUS_CELLS * cell, max(1.0, MIN_RADIUS_CELLS * cell)
    reach = int(np.ceil(cap)) + 1
    for prompts in history.rounds:
        for c in prompts.clicks:
            row, col = pixel(alpha.shape, c.x, c.y)
            rect = (max(0, col - reach), max(0, row - reach), min(w, col + reach + 1), min(h, row + reach + 1))
            agrees = (coarse_on(rect) > 0.5) == c.positive
            radius = click_radius(agrees, (col - rect[0], row - rect[1]), cap)
            _disk(alpha, c.x, c.y, max(radius, floor), c.positive)
        for s in prompts.scribbles:
            _stroke(alpha, s.points, s.width, s.positive)
    return alpha


def drop_unmarked_parts(alpha: np.ndarray, history: PromptHistory) -> np.ndarray:
    """Zero every part of the matte (8-connected alpha > 0.5) that holds none of the positive clicks or stroke vertices;
    nothing when there is no positive mark. Changed in place and returned."""
    marks = [(x, y) for x, y, positive in points(history.merged()) if positive]
    if not marks:
        return alpha
    count, labels = cv2.connectedComponents((alpha > 0.5).astype(np.uint8), connectivity=8)
    if count <= 2:
        return alpha
    keep = np.zeros(count, bool)
    for x, y in marks:
        keep[labels[pixel(labels.shape, x, y)]] = True
    keep[0] = True  # the background label: its soft rim stays as the MRN made it
    alpha[~keep[labels]] = 0.0
    return alpha
