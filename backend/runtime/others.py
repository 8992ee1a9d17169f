"""Other people out of a box's matte: the people the finder found, except the one the matte is, are background.

Why: a user's rectangle is looser than the tight boxes the ISCN learned from and takes in neighbours; the ISCN then
spills onto them. The finder (`backend.runtime.people.PoseDetector.find`; its whole-frame passes suffice here) separates
people the ISCN merges, so once the matte agrees with one find, the other finds are someone else. Measured with the
committed weights (docs/experiments.md, "Other people taken out of a box's matte"): held-out one box 15 % looser 0.682 -> 0.686,
tight 0.737 -> 0.737.

Used in sessions with a box and no text (a text round names a person the finder picked already), in corrective
rounds too (without that the neighbour came back with the first click), but never on a find under a positive click
or stroke: that is someone the user asks for.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from backend.runtime.extent import mask_rect
from backend.runtime.people import DUPLICATE_OVERLAP

# The matte must match one find this well (IoU of alpha > 0.5) before the other finds count as other people: below
# it the matte may be a person the finder missed, and the finds near it could be that person's parts.
MIN_TARGET_IOU = 0.5
# The target's find is grown by this many pixels (on the finder's picture) before the others are cut around it:
# mediapipe's masks are upsampled from 256 px and run short of the outline.
TARGET_GROW_PX = 3
MARK_REACH_PX = 3  # on the finder's picture: a positive mark this close to a find's mask is on that person
# With `take_out_refused`: a find a negative mark lies on is cut only when the matte holds at least this share of its
# mask, i.e. the answer has engulfed that person. Without the guard the cut also took the target's own pixels where a
# neighbour's mask covers them (fresh mosaics, small targets: round losses of up to 0.42 IoU).
REFUSED_ENGULFED = 0.5
# With `off_box`: a matte that matches no find (it spans the boxed person and a neighbour, or the finder missed the
# boxed person) still loses the finds whose rectangle overlaps the user's box this little (IoU): someone beside it.
OFF_BOX_IOU = 0.3


@dataclass(frozen=True)
class FoundPerson:
    """One find: its mask within ``rect`` = (x0, y0, x1, y1) on the finder's picture (kept cropped, so a session
    holds a few hundred kB, not a full-size mask per person)."""

    rect: tuple[int, int, int, int]
    mask: np.ndarray

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> FoundPerson:
        rect = mask_rect(mask)
        if rect is None:
            return cls((0, 0, 0, 0), np.zeros((0, 0), bool))
        x0, y0, x1, y1 = rect
        return cls(rect, mask[y0:y1, x0:x1].copy())

    def iou(self, selected: np.ndarray, selected_area: int) -> float:
        """IoU with the boolean mask ``selected`` of the finder's picture (``selected_area`` its pixel count), counted
        within this find's rectangle only: this runs in every round of a box session."""
        x0, y0, x1, y1 = self.rect
        inter = int(np.count_nonzero(selected[y0:y1, x0:x1] & self.mask))
        union = selected_area + int(np.count_nonzero(self.mask)) - inter
        return inter / union if union else 0.0

    def overlap(self, other: FoundPerson) -> float:
        """Intersection over the smaller find's area, as `backend.runtime.people._overlap` counts it, but within the two
        rectangles' intersection."""
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = self.rect, other.rect
        x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
        inter = 0 if x1 <= x0 or y1 <= y0 else int(np.count_nonzero(
            self.mask[y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0] & other.mask[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]))
        return inter / max(1, min(int(np.count_nonzero(self.mask)), int(np.count_nonzero(other.mask))))

    def reaches(self, c: float, r: float) -> bool:
        """Whether (col c, row r) on the finder's picture lies in this find's rectangle grown by `MARK_REACH_PX`
        (a find with an empty mask reaches nothing)."""
        x0, y0, x1, y1 = self.rect
        g = MARK_REACH_PX
        return bool(self.mask.size) and x0 - g <= c < x1 + g and y0 - g <= r < y1 + g

    def near(self, c: float, r: float) -> bool:
        """Whether (col c, row r) on the finder's picture is within `MARK_REACH_PX` of this find's mask (its masks are
        upsampled and run short of the outline and of the frame's edge); unlike `reaches`, not merely its rectangle."""
        x0, y0, x1, y1 = self.rect
        g = MARK_REACH_PX
        c0, r0 = max(int(c) - g, x0), max(int(r) - g, y0)
        c1, r1 = min(int(c) + g + 1, x1), min(int(r) + g + 1, y1)
        return c0 < c1 and r0 < r1 and bool(self.mask[r0 - y0:r1 - y0, c0 - x0:c1 - x0].any())

    def holds(self, c: float, r: float) -> bool:
        """Whether the pixel (col c, row r) on the finder's picture is in this find's mask."""
        x0, y0, x1, y1 = self.rect
        return x0 <= c < x1 and y0 <= r < y1 and bool(self.mask[int(r) - y0, int(c) - x0])

    def box_iou(self, box: tuple[float, float, float, float]) -> float:
        """IoU of this find's rectangle and ``box`` (x0, y0, x1, y1 on the finder's picture)."""
        (x0, y0, x1, y1), (bx0, by0, bx1, by1) = self.rect, box
        inter = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
        union = (x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - inter
        return inter / max(union, 1e-6)

    def paste(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, bool)
        x0, y0, x1, y1 = self.rect
        out[y0:y1, x0:x1] = self.mask
        return out


def others_mask(selected: np.ndarray, people: Sequence[FoundPerson], spared: Collection[int] = (),
                marked_is_target: bool = False, off_box: tuple[float, float, float, float] | None = None
                ) -> np.ndarray | None:
    """Where the other found people are, on the finder's picture (the shape of ``selected``, the matte > 0.5 there),
    minus the target's grown find and the finds indexed in ``spared``; None when no find is the matte's or nobody
    is to go. With ``marked_is_target``, a matte that matches no find well (it spans the target and a neighbour)
    takes the spared find it overlaps most as the target: the user's click said who it is. With ``off_box`` (the
    user's box on the finder's picture), such a matte loses the finds beside the box (`OFF_BOX_IOU`)."""
    if not people or (len(people) < 2 and off_box is None):
        return None
    area = int(np.count_nonzero(selected))
    ious = [p.iou(selected, area) for p in people]
    if marked_is_target and spared:
        target = max(spared, key=lambda i: ious[i])
    else:
        target = int(np.argmax(ious))
        if ious[target] < MIN_TARGET_IOU:
            return None if off_box is None else _beside(selected.shape, people, spared, off_box)
    if len(people) < 2:
        return None  # the matte is the only find: nobody else to take out
    goal = people[target]
    # Every mask stays within its rectangle: this runs in every round of a box session (7.5 -> 0.4 ms at 1 MP with six
    # finds; pasting each find into a full-size mask was most of it).
    out = np.zeros(selected.shape, bool)
    for i, p in enumerate(people):
        # A find overlapping the target's this much is the same person found twice, as the finder itself judges.
        if i != target and i not in spared and p.overlap(goal) <= DUPLICATE_OVERLAP:
            x0, y0, x1, y1 = p.rect
            out[y0:y1, x0:x1] |= p.mask
    _clear_grown(out, goal)
    return out if out.any() else None


def _clear_grown(out: np.ndarray, person: FoundPerson) -> None:
    """Clear ``person``'s mask, grown by `TARGET_GROW_PX`, from ``out`` (the finder's picture) in place."""
    g = TARGET_GROW_PX
    if not person.mask.size:
        return
    grown = cv2.dilate(np.pad(person.mask, g).astype(np.uint8), np.ones((2 * g + 1, 2 * g + 1), np.uint8)) > 0
    x0, y0, x1, y1 = person.rect
    h, w = out.shape
    cx0, cy0 = max(0, x0 - g), max(0, y0 - g)  # the grown rectangle, clipped to the picture
    cx1, cy1 = min(w, x1 + g), min(h, y1 + g)
    out[cy0:cy1, cx0:cx1] &= ~grown[cy0 - (y0 - g):cy1 - (y0 - g), cx0 - (x0 - g):cx1 - (x0 - g)]


def _beside(shape: tuple[int, int], people: Sequence[FoundPerson], spared: Collection[int],
            box: tuple[float, float, float, float]) -> np.ndarray | None:
    """The finds (not spared) whose rectangle overlaps ``box`` by IoU < `OFF_BOX_IOU`: people beside the box."""
    out = np.zeros(shape, bool)
    for i, p in enumerate(people):
        if i not in spared and p.mask.size and p.box_iou(box) < OFF_BOX_IOU:
            x0, y0, x1, y1 = p.rect
            out[y0:y1, x0:x1] |= p.mask
    return out if out.any() else None


def marked(people: Sequence[FoundPerson], positives: Sequence[tuple[float, float]], scale: tuple[float, float]
           ) -> set[int]:
    """Indices of the finds under a positive mark ((x, y) in image pixels; ``scale`` = (x, y) factors onto the
    finder's picture): someone the user asks for, never taken out. A mark inside one find's rectangle (grown by
    `MARK_REACH_PX`) is on that person even where the find's mask runs short of the outline (a click on a sleeve's
    edge, or where a cut-off body meets the frame); inside several, it is on the one whose mask is nearest."""
    out = set()
    for x, y in positives:
        c, r = x * scale[0], y * scale[1]
        near = [(_distance_to(p, c, r), i) for i, p in enumerate(people) if p.reaches(c, r)]
        if near:
            out.add(min(near)[1])
    return out


def _distance_to(p: FoundPerson, c: float, r: float) -> float:
    """Pixels from (col c, row r) on the finder's picture to the nearest pixel of ``p``'s mask."""
    x0, y0, _, _ = p.rect
    cc = int(np.clip(c - x0, 0, p.mask.shape[1] - 1))
    rr = int(np.clip(r - y0, 0, p.mask.shape[0] - 1))
    if p.mask[rr, cc]:
        return 0.0
    dist = cv2.distanceTransform((~p.mask).astype(np.uint8), cv2.DIST_L2, 3)
    return float(dist[rr, cc]) + abs(c - x0 - cc) + abs(r - y0 - rr)


def take_out_others(alpha: np.ndarray, people: Sequence[FoundPerson], picture_shape: tuple[int, int],
                    positives: Sequence[tuple[float, float]] = (), marked_is_target: bool = False,
                    off_box: Sequence[float] | None = None) -> bool:
    """Zero ``alpha`` (H x W, in place) on the found people other than the one it selects and those under one of the
    ``positives`` (image pixels); ``people`` are on the finder's picture of ``picture_shape`` (the photo, possibly
    downscaled). True when anything was taken out. ``marked_is_target``, ``off_box`` (here in image pixels): see
    `others_mask`."""
    if not people or (len(people) < 2 and off_box is None):
        return False  # nobody found (or the finder could not run): nothing to take out, and no picture to map to
    h, w = alpha.shape
    ph, pw = picture_shape
    on_picture = _on_picture(alpha, picture_shape)
    spared = marked(people, positives, (pw / w, ph / h)) if positives else set()
    box = None if off_box is None else (off_box[0] * pw / w, off_box[1] * ph / h, off_box[2] * pw / w,
                                        off_box[3] * ph / h)
    out = others_mask(on_picture > 0.5, people, spared, marked_is_target, box)
    if out is None:
        return False
    _cut(alpha, out)
    return True


def _on_picture(alpha: np.ndarray, picture_shape: tuple[int, int]) -> np.ndarray:
    """``alpha`` (H x W) on the finder's picture of ``picture_shape``: itself, or area-averaged down to it."""
    ph, pw = picture_shape
    return alpha if alpha.shape == (ph, pw) else cv2.resize(alpha, (pw, ph), interpolation=cv2.INTER_AREA)


def _cut(alpha: np.ndarray, out: np.ndarray) -> None:
    """Zero ``alpha`` (H x W, in place) where ``out`` (the finder's picture, possibly smaller) is set."""
    h, w = alpha.shape
    if out.shape == (h, w):
        alpha[out] = 0.0
    else:
        # Upsampled linearly, so the cut follows the finder's outline without blocks on a large photo.
        keep = 1.0 - cv2.resize(out.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        np.multiply(alpha, keep, out=alpha)


# `prompted_others`: a find whose rectangle matches the box at least this share of the best match's IoU may be the
# target too (two people in one loose box), so it is never marked as someone else.
BOX_RIVAL = 0.7
BOX_MIN_IOU = 0.3  # below this the box points at no find: nobody is known to be someone else
OTHERS_SHRINK_PX = 3  # on the finder's picture: the finds are shrunk before they tell the networks who is not wanted


def prompted_others(people: Sequence[FoundPerson], picture_shape: tuple[int, int], image_shape: tuple[int, int],
                    box: Sequence[float] | None, positives: Sequence[tuple[float, float]],
                    negatives: Sequence[tuple[float, float]] = ()) -> np.ndarray | None:
    """The found people the prompts do not point at, on the finder's picture, or None when the prompts point at no
    find and no negative mark is on one (with no target, only the finds under negative marks are marked). The box
    points at the finds whose rectangle matches it best (IoU), rivals within `BOX_RIVAL` of the best included; a
    positive mark at the find under it (`marked`) and at every find whose rectangle holds it. Each other find is
    shrunk by `OTHERS_SHRINK_PX`, and nothing under a positive mark is ever marked (the user asked for that
    pixel). A find whose mask holds a negative mark and no positive one is someone else whatever positive marks its
    rectangle holds (the user said "not this one"); the box's finds stay the target."""
    if len(people) < 2:
        return None
    ph, pw = picture_shape
    h, w = image_shape
    sx, sy = pw / w, ph / h
    # The finds' masks can miss the clicked person (an occluded target, pixels given to a neighbour): any find whose
    # rectangle holds a positive mark may be the target (a superset of `marked`'s nearest find), so it is never
    # marked as someone else.
    targets = {i for x, y in positives for i, p in enumerate(people) if p.reaches(x * sx, y * sy)}
    said_not = {i for x, y in negatives for i, p in enumerate(people) if p.holds(x * sx, y * sy)}
    said_not -= {i for x, y in positives for i, p in enumerate(people) if p.holds(x * sx, y * sy)}
    targets -= said_not
    if box is not None:
        on_picture = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        ious = [p.box_iou(on_picture) if p.mask.size else 0.0 for p in people]
        best = max(ious)
        if best >= BOX_MIN_IOU:
            targets |= {i for i, v in enumerate(ious) if v >= BOX_RIVAL * best}
    if not targets and not said_not:
        return None
    out = np.zeros((ph, pw), bool)
    g = OTHERS_SHRINK_PX
    kernel = np.ones((2 * g + 1, 2 * g + 1), np.uint8)
    for i, p in enumerate(people):
        if i in targets or (not targets and i not in said_not) or not p.mask.size \
                or any(p.overlap(people[t]) > DUPLICATE_OVERLAP for t in targets):
            continue
        x0, y0, x1, y1 = p.rect
        out[y0:y1, x0:x1] |= cv2.erode(np.pad(p.mask, g).astype(np.uint8), kernel)[g:-g, g:-g] > 0
    for x, y in positives:
        col, row = int(x * sx), int(y * sy)
        out[max(0, row - g):row + g + 1, max(0, col - g):col + g + 1] = False
    return out if out.any() else None


def take_out_refused(alpha: np.ndarray, people: Sequence[FoundPerson], picture_shape: tuple[int, int],
                     positives: Sequence[tuple[float, float]], negatives: Sequence[tuple[float, float]]) -> bool:
    """Zero ``alpha`` (H x W, in place) on each find the user said "not this one" to: its mask holds one of the
    ``negatives`` and no positive mark is near it (`FoundPerson.near`), and the matte holds at least
    `REFUSED_ENGULFED` of it. Marks are image pixels; ``people`` are on the finder's picture of ``picture_shape``. The
    finds positive marks are near keep their pixels (grown by `TARGET_GROW_PX`) where a refused mask overlaps them.
    True when anything was cut.

    Why: a click on a small person is sometimes answered with the whole foreground, and negative clicks on the big
    neighbour then only punch holes in it, round after round (held-out 000000000110: IoU 0.02 for five rounds)."""
    if not people or not negatives:
        return False
    h, w = alpha.shape
    ph, pw = picture_shape
    sx, sy = pw / w, ph / h
    spared = {i for x, y in positives for i, p in enumerate(people) if p.near(x * sx, y * sy)}
    refused = {i for x, y in negatives for i, p in enumerate(people) if p.holds(x * sx, y * sy)} - spared
    if not refused:
        return False
    selected = _on_picture(alpha, picture_shape) > 0.5
    out = np.zeros((ph, pw), bool)
    for i in refused:
        x0, y0, x1, y1 = people[i].rect
        mask = people[i].mask
        if np.count_nonzero(mask & selected[y0:y1, x0:x1]) >= REFUSED_ENGULFED * max(1, np.count_nonzero(mask)):
            out[y0:y1, x0:x1] |= mask
    for i in spared:
        _clear_grown(out, people[i])
    if not out.any():
        return False
    _cut(alpha, out)
    return True
