"""Reading the facts a sentence names, and ranking found people on them (backend.runtime.sentence)."""

from __future__ import annotations

import pytest

from backend.runtime.refexpr import PersonFacts
from backend.runtime.sentence import Query, parse, pick


@pytest.mark.parametrize(("text", "expected"), [
    ("the person on the left", Query(side="left", person=True)),
    ("the leftmost person", Query(side="left", person=True)),
    ("the one furthest to the right", Query(side="right", person=True)),
    ("the person on the far left", Query(side="left", person=True)),
    ("2nd from left", Query(side="left", ordinal=2)),
    ("the third person from the right", Query(side="right", ordinal=3, person=True)),
    ("the person in grey on the left", Query(side="left", colour="grey", person=True)),
    ("someone dressed in GRAY", Query(colour="grey", person=True)),
    ("the middle person", Query(middle=True, person=True)),
    ("the figure in the centre", Query(middle=True, person=True)),
    ("the biggest one", Query(size="large", person=True)),
    ("the tiniest figure", Query(size="small", person=True)),
    ("whoever is nearest the camera", Query(depth="front")),
    ("the person in the background", Query(depth="back", person=True)),
    ("the most distant figure", Query(depth="back", person=True)),
    ("the person far away", Query(depth="back", person=True)),
    ("the person", Query(person=True)),
    ("a bowl of soup", Query()),
])
def test_parse_reads_the_named_facts(text, expected):
    assert parse(text) == expected


def test_a_side_said_as_an_extreme_is_not_a_depth():
    # "furthest" and "far" belong to the side they stand next to; alone they speak of depth.
    assert parse("the person furthest left").depth is None
    assert parse("the person furthest away").depth == "back"


def facts(cx: float, area: int = 100, foot: int = 50, colour: str | None = "grey",
          lab: tuple[float, float, float] | None = (50.0, 0.0, 0.0)) -> PersonFacts:
    return PersonFacts(cx=cx, area=area, foot=foot, colour=colour, lab=lab)


def test_pick_ranks_the_found_people_on_the_named_fact():
    people = [facts(10, area=50, foot=40, colour="red", lab=(45.0, 60.0, 45.0)),
              facts(50, area=400, foot=90, colour="grey"),
              facts(90, area=100, foot=60, colour="grey"),
              facts(130, area=80, foot=55, colour="blue", lab=(35.0, 20.0, -60.0))]
    assert pick(parse("the person on the left"), people) == 0
    assert pick(parse("the rightmost person"), people) == 3
    assert pick(parse("the second person from the left"), people) == 1
    assert pick(parse("the second person from the right"), people) == 2
    assert pick(parse("the person in grey on the right"), people) == 2  # rightmost of the grey ones, not of all
    assert pick(parse("the left person in grey"), people) == 1
    assert pick(parse("the person wearing blue"), people) == 3
    assert pick(parse("the largest person"), people) == 1
    assert pick(parse("the smallest person"), people) == 0
    assert pick(parse("the person in front"), people) == 1
    assert pick(parse("the person at the back"), people) == 0
    assert pick(parse("that person"), people) == 1  # no fact named: the most prominent


def test_a_colour_nobody_wears_goes_to_the_nearest_colour():
    people = [facts(10, colour="grey"), facts(50, colour="red", lab=(45.0, 60.0, 45.0))]
    assert pick(parse("the person in orange"), people) == 1


def test_middle_of_an_even_count_is_the_one_nearer_the_group_centre():
    people = [facts(0), facts(45), facts(70), facts(120)]
    assert pick(parse("the person in the middle"), people) == 2  # centre 58.75: 70 is nearer than 45


def test_nothing_to_pick_from_or_nothing_asked():
    assert pick(parse("the person on the left"), []) is None
    assert pick(parse("a bowl of soup"), [facts(10)]) is None
    # An ordinal past the end counts to the far side rather than failing.
    assert pick(parse("the third person from the left"), [facts(10), facts(50)]) == 1
