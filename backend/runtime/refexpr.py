"""Referring expressions generated from person masks (no human wrote them).

For each person the generator derives simple facts from the masks and the photo — horizontal order, size, which
foot is lowest in the frame (front/back), the dominant clothing colour of the torso — and keeps only the phrases
that single that person out among *all* the given people by a clear margin. The first expressions of each list
come one per kind of fact (position, colour, size, depth, combinations); alternative wordings follow.

These are generated, not collected from people: they are short, template-like and cover only what the masks and a
median colour can tell. ``docs/evaluation.md`` says so wherever text results are reported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["PersonFacts", "person_facts", "colour_name", "expressions", "expressions_from_facts", "reword"]

# Margins that make a fact "clear": a neighbour this close is too close to tell apart in words.
X_MARGIN = 0.04      # of the image width, between centroids
FOOT_MARGIN = 0.05   # of the image height, between lowest mask points
SIZE_RATIO = 1.3     # area ratio to the runner-up
COLOUR_DISTANCE = 20.0  # CIELAB distance between torso colours that share no name
ORDINALS = ("first", "second", "third")


@dataclass(frozen=True)
class PersonFacts:
    cx: float
    area: int
    foot: int
    colour: str | None
    lab: tuple[float, float, float] | None


def colour_name(rgb: Sequence[float]) -> str:
    """A basic colour word for an RGB triple (0-255)."""
    pixel = np.uint8([[list(np.clip(rgb, 0, 255))]])
    h, s, v = (float(x) for x in cv2.cvtColor(pixel, cv2.COLOR_RGB2HSV_FULL)[0, 0])
    hue = h * 360.0 / 256.0
    s /= 255.0
    v /= 255.0
    if v < 0.22:
        return "black"
    if s < 0.2 or (s < 0.3 and v < 0.4):
        if v > 0.78:
            return "white"
        return "grey"
    if hue < 15 or hue >= 340:
        return "brown" if v < 0.45 else "red"
    if hue < 42:
        return "brown" if v < 0.6 else "orange"
    if hue < 70:
        return "yellow" if v >= 0.5 else "brown"
    if hue < 165:
        return "green"
    if hue < 255:
        return "blue"
    if hue < 290:
        return "purple"
    return "pink"


def _torso(mask: np.ndarray) -> np.ndarray:
    """The mask rows from 25 % to 55 % of the person's height: mostly the upper-body clothing."""
    rows = np.flatnonzero(mask.any(axis=1))
    top, bottom = rows[0], rows[-1] + 1
    h = bottom - top
    band = np.zeros_like(mask)
    lo, hi = top + int(0.25 * h), top + max(int(0.55 * h), int(0.25 * h) + 1)
    band[lo:hi] = mask[lo:hi]
    # Erode so the edge pixels, which mix in the background, do not vote.
    eroded = cv2.erode(band.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return eroded if eroded.sum() >= 20 else band


def person_facts(mask: np.ndarray, image: np.ndarray | None) -> PersonFacts:
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("a person mask is empty")
    rows, cols = np.nonzero(mask)
    colour = lab = None
    if image is not None:
        torso = _torso(mask)
        if torso.sum() >= 20:
            median = np.median(image[torso].reshape(-1, 3), axis=0)
            colour = colour_name(median)
            lab_px = cv2.cvtColor(np.uint8([[median]]), cv2.COLOR_RGB2LAB)[0, 0].astype(float)
            # OpenCV's 8-bit Lab scales L to 0-255; bring it back to 0-100 so distances are CIELAB-like.
            lab = (lab_px[0] * 100.0 / 255.0, lab_px[1] - 128.0, lab_px[2] - 128.0)
    return PersonFacts(cx=float(cols.mean()), area=int(rows.size), foot=int(rows.max()), colour=colour, lab=lab)


def _order_phrases(facts: list[PersonFacts], members: list[int], width: int, suffix: str = "") -> dict[int, list[str]]:
    """Position phrases for ``members`` (indices into ``facts``), ordered among themselves only."""
    out: dict[int, list[str]] = {}
    n = len(members)
    if n < 2:
        return out
    order = sorted(members, key=lambda i: facts[i].cx)
    xs = [facts[i].cx for i in order]
    margin = X_MARGIN * width
    gaps = [xs[k + 1] - xs[k] for k in range(n - 1)]
    noun = f"person{suffix}"
    for rank, i in enumerate(order):
        clear_left = rank == 0 or gaps[rank - 1] >= margin
        clear_right = rank == n - 1 or gaps[rank] >= margin
        if not (clear_left and clear_right):
            continue
        phrases: list[str] = []
        if n == 2:
            side = "left" if rank == 0 else "right"
            phrases += [f"the {noun} on the {side}", f"the {side} {noun}"]
        elif rank == 0:
            phrases += [f"the leftmost {noun}", f"the {noun} on the far left"]
        elif rank == n - 1:
            phrases += [f"the rightmost {noun}", f"the {noun} on the far right"]
        elif n == 3:
            phrases += [f"the {noun} in the middle", f"the middle {noun}"]
        from_left, from_right = rank, n - 1 - rank
        if n >= 3 and 0 < min(from_left, from_right) < len(ORDINALS):
            # Ordinals count from the nearer side, the way people say them.
            if from_left <= from_right:
                phrases.append(f"the {ORDINALS[from_left]} {noun} from the left")
            else:
                phrases.append(f"the {ORDINALS[from_right]} {noun} from the right")
        if phrases:
            out[i] = phrases
    return out


def _extreme(values: list[float], i: int, largest: bool, ratio: float | None, margin: float | None) -> bool:
    others = [v for j, v in enumerate(values) if j != i]
    if not others:
        return False
    if largest:
        best = max(others)
        return values[i] >= best * ratio if ratio else values[i] >= best + margin
    best = min(others)
    return values[i] * ratio <= best if ratio else values[i] <= best - margin


def _colour_distinct(facts: list[PersonFacts], i: int) -> bool:
    me = facts[i]
    if me.colour is None or me.lab is None:
        return False
    for j, other in enumerate(facts):
        if j == i:
            continue
        if other.colour is None or other.colour == me.colour:
            return False
        if other.lab is not None and np.linalg.norm(np.subtract(me.lab, other.lab)) < COLOUR_DISTANCE:
            return False
    return True


def expressions(masks: Sequence[np.ndarray], image: np.ndarray | None) -> list[list[str]]:
    """For each mask, the generated expressions that pick out that person and no other of ``masks``.

    A list may be empty when nothing sets the person clearly apart. ``image`` (H x W x 3 uint8 RGB) supplies
    colours; with ``None`` only geometric expressions are made.
    """
    masks = [np.asarray(m, bool) for m in masks]
    if not masks:
        return []
    shape = masks[0].shape
    if any(m.shape != shape for m in masks):
        raise ValueError("all masks must have the same shape")
    if image is not None and image.shape[:2] != shape:
        raise ValueError(f"image {image.shape[:2]} and masks {shape} differ in size")
    return expressions_from_facts([person_facts(m, image) for m in masks], shape)


def expressions_from_facts(facts: Sequence[PersonFacts], shape: tuple[int, int]) -> list[list[str]]:
    """`expressions` from each person's facts, already derived on a picture of ``shape`` (H, W)."""
    height, width = shape
    facts = list(facts)
    n = len(facts)
    if n == 0:
        return []

    if n == 1:
        out = ["the person"]
        if facts[0].colour:
            out.append(f"the person in {facts[0].colour}")
        out += ["the person in the photo"]
        return [out]

    firsts: list[list[str]] = [[] for _ in range(n)]
    rests: list[list[str]] = [[] for _ in range(n)]

    def add(i: int, phrases: list[str]) -> None:
        firsts[i].append(phrases[0])
        rests[i].extend(phrases[1:])

    for i, phrases in _order_phrases(facts, list(range(n)), width).items():
        add(i, phrases)
    for i in range(n):
        if _colour_distinct(facts, i):
            add(i, [f"the person in {facts[i].colour}", f"the person wearing {facts[i].colour}"])
    areas = [float(f.area) for f in facts]
    feet = [float(f.foot) for f in facts]
    for i in range(n):
        if _extreme(areas, i, True, SIZE_RATIO, None):
            add(i, ["the largest person", "the biggest person"])
        elif _extreme(areas, i, False, SIZE_RATIO, None):
            add(i, ["the smallest person"])
        if _extreme(feet, i, True, None, FOOT_MARGIN * height):
            add(i, ["the person in front", "the closest person"])
        elif _extreme(feet, i, False, None, FOOT_MARGIN * height):
            add(i, ["the person at the back", "the person furthest away"])
    # Combinations: position among the people who share a colour name.
    by_colour: dict[str, list[int]] = {}
    for i, f in enumerate(facts):
        if f.colour:
            by_colour.setdefault(f.colour, []).append(i)
    for colour, members in by_colour.items():
        if len(members) >= 2:
            for i, phrases in _order_phrases(facts, members, width, suffix=f" in {colour}").items():
                add(i, phrases)

    result = []
    for i in range(n):
        seen: list[str] = []
        for phrase in firsts[i] + rests[i]:
            if phrase not in seen:
                seen.append(phrase)
        result.append(seen)
    return result


# Hand-written rewordings, none of which `expressions` produces: what a user might type instead. They exist to test
# that text matching (backend.runtime.grounding) does not depend on the generator's exact wording. Applied in order.
_REWORDINGS: tuple[tuple[str, str], ...] = (
    (r"^the person in the photo$", "the human in this picture"),
    (r"^the person$", "that human"),
    (r"on the far (left|right)", r"at the very \1 edge"),
    (r"the (left|right)most person", r"the person furthest \1"),
    (r"the person on the (left|right)", r"the one standing on the \1 side"),
    (r"the (left|right) person", r"whoever is on the \1"),
    (r"the (first|second|third) (.*?)from the (left|right)", r"the \1 \2counting from the \3"),
    (r"in the middle", "in the centre"),
    (r"the middle person", "the one in the center"),
    (r"the person wearing (\w+)", r"someone dressed in \1"),
    (r"the person in (black|white|grey|red|orange|yellow|brown|green|blue|purple|pink)$", r"the one with the \1 top"),
    (r"the (largest|biggest) person", "the person taking up the most space"),
    (r"the smallest person", "the tiniest figure"),
    (r"the person in front", "the person nearest the camera"),
    (r"the closest person", "whoever is nearest to us"),
    (r"the person at the back", "the person in the background"),
    (r"the person furthest away", "the most distant person"),
    (r"\bperson\b", "figure"),
)


def reword(phrase: str) -> str:
    """A generated expression said another way (see `_REWORDINGS`); same meaning, other words."""
    for pattern, replacement in _REWORDINGS:
        phrase = re.sub(pattern, replacement, phrase)
    return phrase
