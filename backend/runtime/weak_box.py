"""A person the finder left out, confirmed by the user's marks: a weak detector box becomes `click_box`'s choice.

Why: on the held-out photos, 21 of the 131 click sessions start with a click on nobody the finder found. The
networks then answer from the click alone, and on a small person in a crowd that answer is often a large neighbour
(five clicks later IoU 0.02-0.08 in six of them). For most of these people NanoDet does have a box, scored under the
finder's floor (0.4): the finder cannot keep such boxes for everyone (on fresh composites a lower floor found fewer
people, `docs/experiments.md`), but a positive click inside one is evidence the finder lacked. So, in a marks-only
first round whose marks lie on no find, the highest-scored NanoDet box that holds the positive marks and is nobody
found already is segmented by BlazePose; when that mask holds the marks too, the networks see the box in that round
as `click_box` shows a find's. From the second round the session goes on with the marks alone: kept for the session,
a weak box that was not quite the person held real-photo sessions in for twenty rounds (its mask, often short of the
person, never met the negative clicks that would have ended it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backend.runtime.finder import box_iou
from backend.runtime.others import FoundPerson
from backend.runtime.people import rect_on_picture
from backend.runtime.person_nets import CropMask

# Set before the first measurement.
MIN_SCORE = 0.2  # NanoDet's person score: below this, held-out boxes holding a click were mostly not the person
NEW_IOU = 0.5  # a box this alike a found person's box is that person (their mask missed the marks: not this rule)
MAX_TRIED = 3  # boxes segmented at most per round (BlazePose ~20 ms each)


def candidate_boxes(boxes: np.ndarray, scores: np.ndarray, found_boxes: Sequence[Sequence[float]],
                    positives: Sequence[tuple[float, float]], min_share: float) -> list[int]:
    """Indices of ``boxes`` (N, 4, image px) scored at least `MIN_SCORE`, holding at least ``min_share`` of the
    positive marks (x, y) and alike no found box (IoU < `NEW_IOU`), highest score first, at most `MAX_TRIED`."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes) or not positives:
        return []
    pts = np.asarray(positives, np.float32).reshape(-1, 2)
    inside = ((pts[None, :, 0] >= boxes[:, None, 0]) & (pts[None, :, 0] <= boxes[:, None, 2])
              & (pts[None, :, 1] >= boxes[:, None, 1]) & (pts[None, :, 1] <= boxes[:, None, 3])).mean(axis=1)
    ok = (np.asarray(scores) >= MIN_SCORE) & (inside >= min_share)
    if len(found_boxes):
        ok &= box_iou(boxes, np.asarray(found_boxes, np.float32)).max(axis=1) < NEW_IOU
    order = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable") if ok[i]]
    return order[:MAX_TRIED]


def on_picture(crop: CropMask, image_shape: tuple[int, int], picture_shape: tuple[int, int]) -> FoundPerson:
    """BlazePose's mask of a crop (image pixels) as a find on the finder's picture of ``picture_shape``."""
    (h, w), (ph, pw) = image_shape, picture_shape
    placed = rect_on_picture(crop.mask, crop.rect, (pw / w, ph / h), (pw, ph))
    if placed is None:
        return FoundPerson((0, 0, 0, 0), np.zeros((0, 0), bool))
    return FoundPerson(*placed)
