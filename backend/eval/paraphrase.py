"""Hand-written paraphrases of the generated referring expressions, to measure robustness to wording.

The evaluation's expressions come from a small set of templates ("the person on the left", "the second person
in green from the right", ...), so a sentence-to-person matcher can score well just by knowing those exact
templates. A user typing into a GIMP or Krita prompt box does not use them: they write "left one please",
"2nd from left", "the one with the red shirt", "the person in the background".

This table is an independent set: it was written by hand, without sight of the matcher or of any earlier
paraphrase table, so that scores on it say how the matcher copes with wording it was not written against.
Only the words change; each paraphrase keeps the side, the ordinal, the colour and the kind of cue (position,
size in the picture, depth) of the original. Gender is unknown, so no paraphrase says man, woman, guy or girl.
"""

from __future__ import annotations

import re

VARIANTS = 4
"""Alternatives per phrase; ``variant`` is taken modulo this, so any item index can be passed straight in."""

COLOURS = ("black", "white", "grey", "red", "orange", "yellow", "brown", "green", "blue", "purple", "pink")

_ORDINAL_DIGITS = {"first": "1st", "second": "2nd", "third": "3rd"}

# Nouns and colour wordings rotate with the variant and with the kind of phrase, so one kind is not always
# paired with the same noun and every wording meets every cue somewhere in an evaluation set.
_NOUNS = ("person", "one", "figure", "individual", "human")
_CLOTHES = ("dressed in {c}", "with the {c} shirt", "in a {c} top", "wearing a {c} jacket", "in {c} clothes",
            "in the {c} outfit")

# One entry per kind of phrase, VARIANTS templates each. {n} is the noun phrase (with its colour, if any);
# {one} is the same with the noun fixed to "one", for short requests where "left individual please" would
# read oddly; {side} is left/right, {ord} the ordinal word, {nth} its digit form.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    # No {n}: with nothing else in the phrase, "the one" or "select the one" would not read as a request.
    "any": ("select the person", "the human in the picture", "person in the image", "the figure in this photo"),
    "colour": ("the {n}", "select the {n}", "{n}", "the {n} please"),
    "side": ("the {n} on the {side} side", "{side} {one} please", "select the {n} at the {side}",
             "the {n} on the {side}-hand side"),
    "sidemost": ("the {n} furthest to the {side}", "the {side}-most {n}", "select the {n} at the {side} edge",
                 "the {n} all the way on the {side}"),
    "middle": ("the {n} in the center", "the {n} in the centre", "select the central {n}",
               "{n} in the middle of the group"),
    "ordinal": ("the {nth} {n} from the {side}", "{nth} {n} from {side}", "select the {n} that is {ord} from the {side}",
                "the {ord} {n} counting from the {side}"),
    "largest": ("the {n} that looks largest", "the biggest {n} in the picture", "select the largest {n}",
                "the {n} taking up the most space in the frame"),
    "smallest": ("the tiniest {n}", "the {n} that looks smallest", "select the smallest {n} in the image",
                 "the {n} taking up the least space in the frame"),
    "front": ("the {n} nearest the camera", "the {n} in the foreground", "select the {n} closest to the camera",
              "the {one} at the front please"),
    "back": ("the {n} farthest from the camera", "the {n} in the background", "select the {n} furthest back",
             "pick the most distant {n}"),
}
_KIND_OFFSET = {kind: i for i, kind in enumerate(_TEMPLATES)}

_C = "(?P<colour>" + "|".join(COLOURS) + ")"
_N = rf"person(?: (?:in|wearing) {_C})?"
_S = "(?P<side>left|right)"

# Anchored full matches, tried in order; a phrase that matches none is not one of ours and is left alone.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile(rx)) for kind, rx in (
    ("any", r"the person in the photo"),
    ("colour", rf"the {_N}"),
    ("side", rf"the {_N} on the {_S}"),
    ("side", rf"the {_S} {_N}"),
    ("sidemost", rf"the {_S}most {_N}"),
    ("sidemost", rf"the {_N} on the far {_S}"),
    ("middle", rf"the {_N} in the middle"),
    ("middle", rf"the middle {_N}"),
    ("ordinal", rf"the (?P<ord>first|second|third) {_N} from the {_S}"),
    ("largest", rf"the (?:largest|biggest) {_N}"),
    ("smallest", rf"the smallest {_N}"),
    ("front", rf"the {_N} in front"),
    ("front", rf"the closest {_N}"),
    ("back", rf"the {_N} at the back"),
    ("back", rf"the {_N} furthest away"),
))


def _parse(phrase: str) -> tuple[str, dict[str, str | None]] | None:
    text = " ".join(phrase.lower().split())
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(text)
        if m:
            groups = m.groupdict()
            if kind == "colour" and groups["colour"] is None:
                kind = "any"  # plain "the person"
            return kind, groups
    return None


def paraphrase(phrase: str, variant: int = 0) -> str:
    """``phrase`` reworded as a user might type it; ``variant`` (0..3, taken modulo 4) picks the wording.

    Same phrase and variant, same result. Text that is not one of the generator's templates comes back
    unchanged, so the function can be applied to a whole evaluation set blindly.
    """
    parsed = _parse(phrase)
    if parsed is None:
        return phrase
    kind, groups = parsed
    v = variant % VARIANTS
    turn = v + _KIND_OFFSET[kind]
    colour = groups.get("colour")
    clothes = " " + _CLOTHES[turn % len(_CLOTHES)].format(c=colour) if colour else ""
    ordinal = groups.get("ord") or ""
    return _TEMPLATES[kind][v].format(n=_NOUNS[turn % len(_NOUNS)] + clothes, one="one" + clothes,
                                      side=groups.get("side") or "", ord=ordinal,
                                      nth=_ORDINAL_DIGITS.get(ordinal, ""))
