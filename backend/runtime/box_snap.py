"""A loose box snapped to the person it was drawn around: that person's detector box prompts the networks instead.

Why: users draw rectangles looser than the tight (+-8 %) boxes the ISCN learned from; on the held-out photos a box 15 %
looser on every side gives IoU 0.689 where a tight one gives 0.745. The person networks' detector boxes are tight like
COCO's (`backend.runtime.people.NetsDetector`, ``detector_boxes``). When one find's box sits inside the user's box and
is clearly smaller than it, the networks see that box; the user's box still bounds the matte (`box_support`) and stays
the session's, so a corrective round starts from what the user drew.
"""

from __future__ import annotations

from collections.abc import Sequence

from backend.dfimat.prompts import Box

# All four set before the first measurement.
SNAP_INSIDE = 0.85  # share of the find's box inside the user's box: the user drew around this person
SNAP_LOOSER = 1.3  # the user's box is at least this much larger (area) than the find's: a tight box stays as drawn
SNAP_MIN_IOU = 0.4  # the find's box overlaps the user's this much: not one small person of a group box
SNAP_RIVAL = 0.8  # a second find whose IoU with the user's box reaches this share of the best one's: ambiguous


def _area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _intersection(a: Sequence[float], b: Sequence[float]) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def snapped_box(box: Box, finds: Sequence[Sequence[float]]) -> Box | None:
    """The found person's box (x0, y0, x1, y1, image pixels) that the user's ``box`` was drawn around, or None: no
    find lies inside it, the box is already about as tight as the find's, or two finds fit it about equally well."""
    user = box.as_list()
    user_area = _area(user)
    scored = []
    for f in finds:
        area = _area(f)
        if area <= 0:
            continue
        inter = _intersection(user, f)
        if inter < SNAP_INSIDE * area or user_area < SNAP_LOOSER * area:
            continue
        iou = inter / (user_area + area - inter)
        if iou >= SNAP_MIN_IOU:
            scored.append((iou, f))
    if not scored:
        return None
    scored.sort(key=lambda t: -t[0])
    if len(scored) > 1 and scored[1][0] >= SNAP_RIVAL * scored[0][0]:
        return None
    x0, y0, x1, y1 = (float(v) for v in scored[0][1])
    # The find's box kept inside the user's: what lies outside the user's box is not what they asked for.
    x0, y0, x1, y1 = max(x0, box.x0), max(y0, box.y0), min(x1, box.x1), min(y1, box.y1)
    return Box(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
