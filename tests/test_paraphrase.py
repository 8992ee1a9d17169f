"""Hand-written paraphrases of generated referring expressions (`backend.eval.paraphrase`)."""

import re

import pytest

from backend.eval.paraphrase import VARIANTS, paraphrase

_ORDINAL_DIGITS = {"first": "1st", "second": "2nd", "third": "3rd"}


def _templates() -> list[str]:
    """Every generator template, filled with a couple of colours, both sides and every ordinal."""
    phrases = ["the person", "the person in the photo", "the largest person", "the biggest person",
               "the smallest person", "the person in front", "the closest person", "the person at the back",
               "the person furthest away", "the person in the middle", "the middle person"]
    for colour in ("red", "grey"):
        phrases += [f"the person in {colour}", f"the person wearing {colour}"]
    for side in ("left", "right"):
        phrases += [f"the person on the {side}", f"the {side} person", f"the {side}most person",
                    f"the person on the far {side}"]
        phrases += [f"the {o} person from the {side}" for o in _ORDINAL_DIGITS]
    # Colour combined with position: "person" becomes "person in COLOUR".
    phrases += ["the person in grey on the left", "the left person in grey", "the leftmost person in red",
                "the person in blue on the far right", "the person in black in the middle",
                "the middle person in white", "the second person in green from the left",
                "the third person in pink from the right", "the right person in yellow",
                "the person in orange on the right", "the rightmost person in brown",
                "the person in purple on the far left"]
    return phrases


TEMPLATES = _templates()
CASES = [(phrase, v) for phrase in TEMPLATES for v in range(VARIANTS)]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.mark.parametrize(("phrase", "variant"), CASES)
def test_every_template_is_reworded(phrase: str, variant: int) -> None:
    out = paraphrase(phrase, variant)
    assert out and out != phrase
    assert out == out.strip() and "  " not in out and "{" not in out


@pytest.mark.parametrize(("phrase", "variant"), CASES)
def test_meaning_words_survive(phrase: str, variant: int) -> None:
    src, out = _words(phrase), paraphrase(phrase, variant).lower()
    for side, other in (("left", "right"), ("right", "left")):
        if side in phrase:
            # Substring, so "left-most" and "left-hand" count; the other side must not creep in.
            assert side in out and other not in out
    for word, digit in _ORDINAL_DIGITS.items():
        if word in src:
            assert word in _words(out) or digit in _words(out)
    for colour in ("black", "white", "grey", "red", "orange", "yellow", "brown", "green", "blue", "purple", "pink"):
        assert (colour in _words(out)) == (colour in src)
    # The cue's kind survives too: a size phrase stays about size, a depth phrase about depth.
    if src & {"largest", "biggest"}:
        assert re.search(r"larg|big|most space", out)
    if "smallest" in src:
        assert re.search(r"small|tin|least space", out)
    if src & {"front", "closest"}:
        assert re.search(r"front|near|close|foreground", out)
    if src & {"back", "furthest"}:
        assert re.search(r"back|far|distant", out)
    if "middle" in src:
        assert re.search(r"middle|cent", out)


@pytest.mark.parametrize("phrase", TEMPLATES)
def test_variants_differ_and_repeat(phrase: str) -> None:
    outs = [paraphrase(phrase, v) for v in range(VARIANTS)]
    assert len(set(outs)) == VARIANTS
    assert outs == [paraphrase(phrase, v) for v in range(VARIANTS)]
    assert paraphrase(phrase) == outs[0] and paraphrase(phrase, VARIANTS + 1) == outs[1]


@pytest.mark.parametrize("phrase", TEMPLATES)
def test_no_gendered_nouns(phrase: str) -> None:
    for v in range(VARIANTS):
        assert not _words(paraphrase(phrase, v)) & {"man", "woman", "guy", "girl", "boy", "lady", "he", "she"}


@pytest.mark.parametrize("text", ["", "the dog on the left", "the person in magenta", "the fourth person from the left",
                                  "the person on the top", "select everyone", "the person in red on the left side"])
def test_unknown_text_comes_back_unchanged(text: str) -> None:
    for v in range(VARIANTS):
        assert paraphrase(text, v) == text


def test_case_and_spacing_do_not_matter() -> None:
    assert paraphrase("  The Person   on the LEFT ", 2) == paraphrase("the person on the left", 2)
