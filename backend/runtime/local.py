"""A corrective mark changes the matte near itself only (`EngineOptions.local_corrections`).

Why: a corrective click or stroke is the user saying "this part is wrong". The networks answer with a whole new
matte, and on crowded photos that new matte sometimes also gains or loses parts far from the mark (a neighbour's
arm appears, a leg goes), so the round gets worse although the corrected part got better. Keeping only the changes
connected to the new marks and restoring the previous round's matte elsewhere is how FocalClick (Chen et al., CVPR
2022) keeps clicks local, here applied to the returned matte rather than inside the network. Undoing far changes in
every round also undid the ones that help while the matte is still poor, so the engine's default keeps corrections
local from `LATE_ROUND` on.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from backend.runtime.extent import mask_rect

# "late" (`EngineOptions.local_corrections`): from this round of a session on (the third corrective mark after a first
# round). Far changes help while the matte is still poor and are neutral once it is good (fresh composites, second
# rounds: -0.026 IoU when undone at IoU 0.5-0.8 before the round, +0.000 at >= 0.9), and by then most mattes are good.
LATE_ROUND = 4
REACH_FRACTION = 0.02  # of the photo's diagonal: a changed region this close to a new mark is that mark's doing
MIN_REACH_PX = 8
SEAM_PX = 2  # a restored region is grown by this much so its soft edge comes back with it


def acts_in(mode: str, round_number: int) -> bool:
    """Whether local corrections set to ``mode`` (`EngineOptions.local_corrections`) act in a session's round
    ``round_number`` (1 = the first): never when "off", from the second round on, or from `LATE_ROUND` on when
    "late". The engine keeps a round's matte only when the next round may need it."""
    return mode != "off" and round_number >= (LATE_ROUND if mode == "late" else 2)


def reach(height: int, width: int) -> int:
    """The radius in pixels within which a change counts as the new mark's."""
    return max(MIN_REACH_PX, round(REACH_FRACTION * float(np.hypot(height, width))))


def keep_local(alpha: np.ndarray, previous: np.ndarray, marks: Sequence[tuple[float, float]],
               growth_only: bool = False) -> bool:
    """Restore ``previous`` (H x W uint8, the last round's matte × 255) in ``alpha`` (H x W float32, in place) on
    every region where the two mattes disagree (at 0.5) that no new mark (x, y image pixels) is within `reach` of;
    with ``growth_only``, on the regions the new matte adds only. True when anything was restored."""
    changed = (alpha > 0.5) & (previous <= 127) if growth_only else (alpha > 0.5) != (previous > 127)
    if not marks or not changed.any():
        return False
    # Everything below happens within the changes' rectangle grown by the seam: the same pixels, a few ms less per
    # round at 1 MP (the whole-image labelling and lookups were most of it).
    h, w = changed.shape
    x0, y0, x1, y1 = mask_rect(changed, SEAM_PX)
    changed = changed[y0:y1, x0:x1]
    count, labels = cv2.connectedComponents(changed.astype(np.uint8), connectivity=8)
    near = np.zeros(changed.shape, np.uint8)
    r = reach(h, w)
    for x, y in marks:
        cv2.circle(near, (int(round(x)) - x0, int(round(y)) - y0), r, 1, -1)
    kept = np.zeros(count, bool)
    kept[np.unique(labels[(near > 0) & changed])] = True
    kept[0] = True  # label 0: where the mattes agree
    revert = ~kept[labels]
    if not revert.any():
        return False
    grown = cv2.dilate(revert.astype(np.uint8), np.ones((2 * SEAM_PX + 1,) * 2, np.uint8)) > 0
    # The seam grows only into agreeing pixels, never into a change the marks asked for.
    revert = grown & ~(changed & kept[labels])
    view = alpha[y0:y1, x0:x1]
    view[revert] = previous[y0:y1, x0:x1][revert].astype(np.float32) / 255.0
    return True
