"""A loose box snapped to the person it was drawn around: that person's detector box prompts the networks instead.

Why: users draw rectangles looser than the tight (+-8 %) boxes the ISCN learned from; on the held-out photos a box 15 %
looser on every side gives IoU 0.689 where a tight one gives 0.745. The person networks' detector boxes are tight like
COCO's (`backend.runtime.people.NetsDetector`, ``detector_boxes``). When one find's box sits inside the user's box and
is clearly smaller than it, the networks see that box; the user's box still bounds the matte (`box_support`) and stays
the session's, so a corrective round starts from what the user drew.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backend.dfimat.prompts import Box
from backend.runtime.finder import box_iou, inside_share

# All four set before the first measurement.
SNAP_INSIDE = 0.85  # share of the find's box inside the user's box: the user drew around this person
SNAP_LOOSER = 1.3  # the user's box is at least this much larger (area) than the find's: a tight box stays as drawn
SNAP_MIN_IOU = 0.4  # the find's box overlaps the user's this much: not one small person of a group box
SNAP_RIVAL = 0.8  # a second find whose IoU with the user's box reaches this share of the best one's: ambiguous


def snapped_box(box: Box, finds: Sequence[Sequence[float]]) -> Box | None:
    """The found person's box (x0, y0, x1, y1, image pixels) that the user's ``box`` was drawn around, or None: no
    find lies inside it, the box is already about as tight as the find's, or two finds fit it about equally well."""
    found = np.asarray(finds, np.float64).reshape(-1, 4)
    user = np.asarray([box.as_list()], np.float64)
    sides = np.clip(found[:, 2:] - found[:, :2], 0.0, None)
    areas = sides[:, 0] * sides[:, 1]
    user_area = max(0.0, box.x1 - box.x0) * max(0.0, box.y1 - box.y0)
    iou = box_iou(found, user)[:, 0]
    fits = (areas > 0) & (inside_share(found, user)[:, 0] >= SNAP_INSIDE) & (user_area >= SNAP_LOOSER * areas) \
        & (iou >= SNAP_MIN_IOU)
    order = [int(k) for k in np.argsort(-iou, kind="stable") if fits[k]]
    if not order or (len(order) > 1 and iou[order[1]] >= SNAP_RIVAL * iou[order[0]]):
        return None
    x0, y0, x1, y1 = (float(v) for v in found[order[0]])
    # The find's box kept inside the user's: what lies outside the user's box is not what they asked for.
    x0, y0, x1, y1 = max(x0, box.x0), max(y0, box.y0), min(x1, box.x1), min(y1, box.y1)
    return Box(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
