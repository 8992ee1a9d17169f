"""The found person the marks are on: that person's detector box prompts the networks beside the marks.

Why: a box is the prompt the ISCN localises a person best from (held-out one tight box IoU 0.745, one click 0.626),
and the person networks' finds carry tight detector boxes (`backend.runtime.people.NetsDetector`). When a session has
marks but no box, and the positive marks lie on one find, the networks see that find's box in the session, as if the
user had drawn it before the first mark. A sentence given with the marks stays a prompt beside the box: text
grounding only answers text alone, and the marks say who is meant (fresh composites, text + marks first rounds:
mixed round 1 +0.053 [+0.042, +0.064]). The choice is made in the first round and kept for the
session (giving the box up in a later round turned a box-led session into a marks-only one halfway, and corrective
rounds lost more than the first round won); the box the networks see grows to hold every later positive mark
(`grown_box`). One thing ends it: a negative mark on the chosen find's mask (`refused`) says the find was someone
else, or held someone else, and the session goes on with the marks alone (without this, sessions whose first round
took a wrong find's box stayed under it for five rounds of negative clicks). Unlike a drawn box it never bounds the
matte (`box_support` reads the user's prompts), so a later click beyond it still adds to the matte, and the session
keeps what the user gave. The engine also asks the networks' own answer to the marks to agree with the find's mask
(`backend.runtime.engine.CLICK_BOX_AGREEMENT`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from backend.dfimat.prompts import Box, PromptHistory, RoundPrompts
from backend.runtime.marks import points
from backend.runtime.others import FoundPerson

# Set before the first measurement: strokes wander past a find's mask at the outline, clicks do not.
MIN_SHARE = 0.8  # of the positive marks (clicks and stroke vertices) on one find's mask
GROW_MARGIN = 0.05  # of the box's side: a positive mark beyond the find's box is held this far inside the grown box


def marked_find(history: PromptHistory, finds: Sequence[FoundPerson], found_shape: tuple[int, int],
                image_shape: tuple[int, int]) -> int | None:
    """Index of the one find whose mask holds (`FoundPerson.near`) at least `MIN_SHARE` of the history's
    positive marks and none of its negative ones, or None."""
    if not finds:
        return None
    marks = _on_picture(history.merged(), found_shape, image_shape)
    positives = [(c, r) for c, r, positive in marks if positive]
    negatives = [(c, r) for c, r, positive in marks if not positive]
    if not positives:
        return None
    # The mask, not the box: a click on a person the finder missed often lies in a neighbour's box, and then the
    # neighbour's box is the wrong prompt (fresh composites: a click in a find's box but off its mask was on someone
    # else 11 times in 12, on its mask 4 times in 202).
    share = MIN_SHARE * len(positives)
    holding = [k for k, find in enumerate(finds) if sum(find.near(c, r) for c, r in positives) >= share]
    if len(holding) != 1 or any(finds[holding[0]].holds(c, r) for c, r in negatives):
        return None
    return holding[0]


class Chosen(NamedTuple):
    """The find a session's first marks chose: its mask on the finder's picture of ``found_shape``, and its detector
    box in image pixels; ``weak``: a person the finder left out, confirmed by the marks (`backend.runtime.weak_box`)."""

    find: FoundPerson
    box: Box
    found_shape: tuple[int, int]
    weak: bool = False


def refused(chosen: Chosen, new: RoundPrompts, image_shape: tuple[int, int]) -> bool:
    """Whether a negative mark of the round ``new`` (a click or a stroke's vertex) lies on the chosen find's mask. The
    mask itself, not `FoundPerson.near`: a negative click just outside the person's outline corrects the matte's edge,
    not the choice of person."""
    return any(chosen.find.holds(c, r) for c, r, positive in _on_picture(new, chosen.found_shape, image_shape)
               if not positive)


def _on_picture(prompts: RoundPrompts, found_shape: tuple[int, int], image_shape: tuple[int, int]
                ) -> list[tuple[float, float, bool]]:
    """The clicks and stroke vertices of ``prompts`` as (col, row, positive) on the finder's picture."""
    sy, sx = found_shape[0] / image_shape[0], found_shape[1] / image_shape[1]
    return [(x * sx, y * sy, positive) for x, y, positive in points(prompts)]


def grown_box(box: Box, history: PromptHistory, width: int, height: int) -> Box:
    """``box`` grown to hold every positive mark of ``history`` `GROW_MARGIN` inside, within the image. Why: a
    detector box may end above a foot or short of an arm; the networks keep a matte inside the box they are shown
    even where the box does not bound it, so a click beyond it would not take (held-out sessions stuck for five
    rounds)."""
    positives = [(x, y) for x, y, positive in points(history.merged()) if positive]
    if not positives:
        return box
    mx, my = GROW_MARGIN * (box.x1 - box.x0), GROW_MARGIN * (box.y1 - box.y0)
    xs, ys = [x for x, _ in positives], [y for _, y in positives]
    return Box(max(0.0, min(box.x0, min(xs) - mx)), max(0.0, min(box.y0, min(ys) - my)),
               min(float(width), max(box.x1, max(xs) + mx)), min(float(height), max(box.y1, max(ys) + my)))
