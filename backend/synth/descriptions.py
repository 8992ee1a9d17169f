"""Text descriptions of the people in a composite, for text-prompt training.

Each expression must pick exactly one person: positions are ranked among all people (unlabelled ones included,
since a user sees them too), and a colour is only used when no other person's clothing in that part has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


@dataclass(frozen=True)
class PersonView:
    """What the describer knows about one person: visible mask, whole-body box rows, depth, labelled or not."""

    mask: np.ndarray
    top: float
    bottom: float
    depth: float
    labelled: bool = True


def colour_name(rgb_pixels: np.ndarray) -> str | None:
    """Basic colour word for a set of RGB pixels (N x 3 uint8), or None when there are too few pixels."""
    if len(rgb_pixels) < 30:
        return None
    # Median in RGB, then one conversion: a per-channel median of hue would mix reds at 2 and 178 into green.
    median = np.median(rgb_pixels.reshape(-1, 3), axis=0).astype(np.uint8).reshape(1, 1, 3)
    h, s, v = (float(x) for x in cv2.cvtColor(median, cv2.COLOR_RGB2HSV).reshape(3))
    if v < 55:
        return "black"
    if s < 40:
        return "white" if v > 190 else "grey"
    hue = h * 2.0  # OpenCV stores hue / 2
    if hue < 15 or hue >= 340:
        return "red" if v > 90 else "dark red"
    if hue < 40:
        if v > 170 and s < 110:
            return "beige"
        return "brown" if v < 150 or s < 110 else "orange"
    if hue < 70:
        return "yellow" if v > 130 else "brown"
    if hue < 165:
        return "green"
    if hue < 255:
        return "blue"
    if hue < 295:
        return "purple"
    return "pink"


def _band_colour(image: np.ndarray, person: PersonView, lo: float, hi: float) -> str | None:
    """Colour of the clothing in a horizontal band of the body (fractions of the body height from the top).

    Only the central half of the band's width is used: long hair and bare arms hang at the sides.
    """
    span = person.bottom - person.top
    y0, y1 = max(0, int(person.top + lo * span)), max(0, int(person.top + hi * span))
    band = np.zeros_like(person.mask)
    band[y0:y1] = person.mask[y0:y1]
    cols = np.flatnonzero(band.any(axis=0))
    if cols.size == 0:
        return None
    quarter = (cols[-1] + 1 - cols[0]) / 4
    band[:, : int(cols[0] + quarter)] = False
    band[:, int(np.ceil(cols[-1] + 1 - quarter)) :] = False
    return colour_name(image[band])


def describe(image: np.ndarray, people: Sequence[PersonView]) -> list[list[str]]:
    """Per person (same order as ``people``), expressions that refer to that person only; [] for unlabelled."""
    n = len(people)
    cx = [float(np.flatnonzero(p.mask.any(axis=0)).mean()) if p.mask.any() else 0.0 for p in people]
    areas = [float(p.mask.sum()) for p in people]
    tops = [_band_colour(image, p, 0.18, 0.45) for p in people]
    bottoms = [_band_colour(image, p, 0.6, 0.85) for p in people]
    by_x = sorted(range(n), key=lambda i: cx[i])
    out: list[list[str]] = [[] for _ in people]
    widths = [p.mask.any(axis=0).sum() for p in people]
    for i, p in enumerate(people):
        if not p.labelled:
            continue
        texts: list[str] = []
        rank = by_x.index(i)
        # Ranks only mean something when neighbours are clearly apart horizontally.
        margin = 0.25 * max(widths[i], 1)
        clear_left = rank == 0 or cx[i] - cx[by_x[rank - 1]] > margin
        clear_right = rank == n - 1 or cx[by_x[rank + 1]] - cx[i] > margin
        if clear_left and clear_right and n >= 2:
            if rank == 0:
                texts += ["the leftmost person", "the person on the left"]
            elif rank == n - 1:
                texts += ["the rightmost person", "the person on the right"]
            if n == 3 and rank == 1:
                texts.append("the person in the middle")
            if 0 < rank < n - 1 and rank < len(ORDINALS):
                texts.append(f"the {ORDINALS[rank]} person from the left")
        others = [j for j in range(n) if j != i]
        if others and all(p.depth > 1.08 * people[j].depth for j in others):
            texts.append("the person in front")
        if others and all(areas[i] > 1.5 * areas[j] for j in others):
            texts.append("the biggest person")
        if others and all(1.5 * areas[i] < areas[j] for j in others):
            texts.append("the smallest person")
        if tops[i] and all(tops[j] != tops[i] for j in others):
            texts.append(f"the person in the {tops[i]} top")
        if bottoms[i] and all(bottoms[j] != bottoms[i] for j in others):
            texts.append(f"the person wearing {bottoms[i]} on the legs")
        if n == 1:
            texts.append("the person")
        out[i] = texts
    return out
