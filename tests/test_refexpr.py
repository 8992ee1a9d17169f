import numpy as np
import pytest

from backend.runtime.refexpr import colour_name, expressions

H, W = 200, 300


def person(x0, x1, y0, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def paint(masks, colours):
    image = np.full((H, W, 3), 128, np.uint8)
    for m, c in zip(masks, colours, strict=True):
        image[m] = c
    return image


RED, BLUE, GREEN, BLACK, WHITE = (200, 20, 20), (20, 40, 200), (30, 160, 40), (10, 10, 10), (245, 245, 245)


def test_colour_names():
    assert colour_name(RED) == "red"
    assert colour_name(BLUE) == "blue"
    assert colour_name(GREEN) == "green"
    assert colour_name(BLACK) == "black"
    assert colour_name(WHITE) == "white"
    assert colour_name((128, 128, 128)) == "grey"


def unique_everywhere(masks, image):
    """No phrase may be given to two different people."""
    exprs = expressions(masks, image)
    owners = {}
    for i, phrases in enumerate(exprs):
        for p in phrases:
            assert owners.setdefault(p, i) == i, f"{p!r} given to {owners[p]} and {i}"
    return exprs


def test_two_people_left_right_and_colour():
    masks = [person(20, 80, 20, 180), person(200, 260, 20, 180)]
    exprs = unique_everywhere(masks, paint(masks, [RED, BLUE]))
    assert "the person on the left" in exprs[0] and "the person on the right" in exprs[1]
    assert "the person in red" in exprs[0] and "the person in blue" in exprs[1]
    assert not any("largest" in p or "front" in p for p in exprs[0] + exprs[1])


def test_three_people_middle_size_depth():
    masks = [person(10, 60, 50, 150), person(120, 200, 10, 195), person(240, 280, 80, 130)]
    exprs = unique_everywhere(masks, paint(masks, [RED, RED, RED]))
    assert exprs[0][0] == "the leftmost person"
    assert "the person in the middle" in exprs[1] and "the largest person" in exprs[1]
    assert "the person in front" in exprs[1] and "the smallest person" in exprs[2]
    assert "the person at the back" in exprs[2]
    assert not any(p in ("the person in red", "the person wearing red") for e in exprs for p in e)


def test_ordinals_and_colour_combinations():
    xs = [(10, 40), (70, 100), (130, 160), (190, 220), (250, 280)]
    masks = [person(a, b, 20, 180) for a, b in xs]
    exprs = unique_everywhere(masks, paint(masks, [RED, BLUE, RED, BLUE, RED]))
    assert "the second person from the left" in exprs[1]
    assert "the second person from the right" in exprs[3]
    assert "the third person from the left" in exprs[2]
    assert "the person in blue on the left" in exprs[1] and "the person in blue on the right" in exprs[3]
    assert "the leftmost person in red" in exprs[0] and "the person in red in the middle" in exprs[2]


def test_too_close_people_get_no_position():
    masks = [person(100, 150, 20, 180), person(104, 154, 20, 180)]
    exprs = unique_everywhere(masks, paint(masks, [RED, RED]))
    assert exprs == [[], []]


def test_single_person_and_no_image():
    masks = [person(20, 80, 20, 180)]
    assert expressions(masks, paint(masks, [GREEN]))[0][:2] == ["the person", "the person in green"]
    two = [person(20, 80, 20, 180), person(200, 260, 20, 180)]
    exprs = expressions(two, None)
    assert "the person on the left" in exprs[0] and not any("in " in p and "person in" in p for p in exprs[0])
    assert expressions([], None) == []


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        expressions([np.zeros((H, W), bool), person(0, 5, 0, 5)], None)
    with pytest.raises(ValueError, match="same shape"):
        expressions([person(0, 5, 0, 5), np.ones((3, 3), bool)], None)
    with pytest.raises(ValueError, match="differ"):
        expressions([person(0, 5, 0, 5)], np.zeros((10, 10, 3), np.uint8))
