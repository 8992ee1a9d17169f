"""What a short sentence about one person asks for, read word by word: side, order, colour, size, depth.

Why this exists: text grounding (`backend.runtime.grounding`) first matched the sentence against generated
descriptions of every found person by MiniLM similarity. MiniLM places "the person on the left" and "the person on
the right" almost on top of each other, and a description is only generated when a fact sets a person clearly apart,
so a sentence whose fact held only narrowly among the people found, or that was worded another way ("the one
furthest left", "whoever is nearest the camera"), went to the wrong person or to nobody. The facts a sentence names
here are few and closed (the same ones `backend.runtime.refexpr` derives from masks), so they are read from the words
and the person is picked by ranking the found people on those facts; sentences naming none of them are left to the
similarity match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from backend.runtime.refexpr import PersonFacts

__all__ = ["Query", "parse", "pick"]

# Colour words as `backend.runtime.refexpr.colour_name` names them, with the spellings users type for the same hue.
_COLOURS = {
    "black": "black", "white": "white", "grey": "grey", "gray": "grey", "silver": "grey", "red": "red",
    "orange": "orange", "yellow": "yellow", "brown": "brown", "beige": "brown", "tan": "brown", "green": "green",
    "blue": "blue", "navy": "blue", "purple": "purple", "violet": "purple", "pink": "pink",
}
# A typical sRGB of each name: the tie-break when several found people share the named colour.
_PROTOTYPES = {
    "black": (25, 25, 25), "white": (235, 235, 235), "grey": (128, 128, 128), "red": (200, 35, 35),
    "orange": (235, 140, 35), "yellow": (230, 210, 50), "brown": (115, 75, 45), "green": (50, 145, 65),
    "blue": (45, 85, 195), "purple": (120, 55, 160), "pink": (235, 135, 180),
}
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
             "fifth": 5, "5th": 5}
_SIDES = {"left": "left", "right": "right"}
_MIDDLE = {"middle", "centre", "center", "central", "between"}
_LARGE = {"largest", "biggest", "big", "large", "larger", "bigger", "tallest"}
_SMALL = {"smallest", "tiniest", "tiny", "small", "smaller", "little", "shortest", "least"}
_FRONT = {"front", "foreground", "closest", "nearest", "near", "closer", "nearer"}
_BACK = {"back", "background", "furthest", "farthest", "distant", "behind", "rear"}
# "furthest left", "far right", "very left", "left edge": a side said as an extreme, not a depth or size.
_SIDE_MODIFIERS = {"far", "furthest", "farthest", "most", "very", "edge", "end", "extreme"}
# Words that say the sentence is about a person without naming a fact: "the person", "that one", "the kid".
_PERSON = {"person", "people", "human", "figure", "one", "someone", "somebody", "individual", "man", "woman", "guy",
           "girl", "boy", "child", "kid", "lady", "player", "subject", "model", "he", "she", "him", "her", "them"}


@dataclass(frozen=True)
class Query:
    """The facts one sentence names; None where it names none of that kind."""

    side: str | None = None          # "left" / "right": the outermost person on that side
    ordinal: int | None = None       # with ``side``: counted from that side, 1 = outermost
    middle: bool = False
    colour: str | None = None
    size: str | None = None          # "large" / "small"
    depth: str | None = None         # "front" / "back"
    person: bool = False             # a word for a person, with or without a fact

    def names_a_fact(self) -> bool:
        return any((self.side, self.middle, self.colour, self.size, self.depth))


def parse(text: str) -> Query:
    """The facts ``text`` names. Words next to a side word ("far", "most", "furthest") belong to the side."""
    words = re.findall(r"[a-z0-9]+", text.lower().replace("-", " "))
    side_at = [i for i, w in enumerate(words) if w in _SIDES]
    side = words[side_at[-1]] if side_at else None
    near_side = {j for i in side_at for j in range(i - 3, i + 3)}
    outermost = [w.removesuffix("most") for w in words if w in ("leftmost", "rightmost")]
    if side is None and outermost:
        side = outermost[-1]
    ordinal = next((_ORDINALS[w] for w in words if w in _ORDINALS), None) if side else None
    colour = next((_COLOURS[w] for w in words if w in _COLOURS), None)
    free = [w for i, w in enumerate(words) if i not in near_side or w not in _SIDE_MODIFIERS]
    size = "large" if any(w in _LARGE for w in free) else "small" if any(w in _SMALL for w in free) else None
    depth = "front" if any(w in _FRONT for w in free) else "back" if any(w in _BACK for w in free) else None
    if "far" in free and "away" in free:
        depth = "back"
    middle = side is None and any(w in _MIDDLE for w in words)
    return Query(side=side, ordinal=ordinal, middle=middle, colour=colour, size=size, depth=depth,
                 person=any(w in _PERSON for w in words))


def _to_lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """CIELAB-like, as `backend.runtime.refexpr.person_facts` stores a torso's colour (L 0-100, a and b signed)."""
    lab = cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2LAB)[0, 0].astype(float)
    return lab[0] * 100.0 / 255.0, lab[1] - 128.0, lab[2] - 128.0


_PROTOTYPES_LAB = {name: _to_lab(rgb) for name, rgb in _PROTOTYPES.items()}


def _lab_distance(facts: PersonFacts, colour: str) -> float:
    if facts.lab is None:
        return float("inf")
    return float(np.linalg.norm(np.subtract(facts.lab, _PROTOTYPES_LAB[colour])))


def pick(query: Query, facts: Sequence[PersonFacts]) -> int | None:
    """Index into ``facts`` of the person ``query`` means, or None when nobody was found or the sentence names
    neither a fact nor a person ("the dog": left to the similarity match and the ISCN's own text path).

    A sentence about a person that names no fact ("the person", "that one") means the most prominent: the largest
    found. Colour narrows the field first (to the people of that colour name; to the nearest in colour when nobody has
    it), then position, size or depth rank the rest: "the left person in grey" is the leftmost of those in grey."""
    if not facts or not (query.names_a_fact() or query.person):
        return None
    field = list(range(len(facts)))
    if query.colour:
        named = [i for i in field if facts[i].colour == query.colour]
        field = named or field
        if not (query.side or query.middle or query.size or query.depth):
            return min(field, key=lambda i: _lab_distance(facts[i], query.colour))
    by_x = sorted(field, key=lambda i: facts[i].cx)
    if query.side:
        order = by_x if query.side == "left" else by_x[::-1]
        return order[min(len(order), query.ordinal or 1) - 1]
    if query.middle:
        return by_x[(len(by_x) - 1) // 2] if len(by_x) % 2 else min(
            by_x[len(by_x) // 2 - 1: len(by_x) // 2 + 1],
            key=lambda i: abs(facts[i].cx - float(np.mean([facts[j].cx for j in by_x]))))
    if query.size:
        return (max if query.size == "large" else min)(field, key=lambda i: facts[i].area)
    if query.depth:
        return (max if query.depth == "front" else min)(field, key=lambda i: facts[i].foot)
    return max(field, key=lambda i: facts[i].area)
