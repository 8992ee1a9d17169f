import math

import numpy as np
import pytest

from backend.dfimat.prompts import Box, Click, PromptError, PromptHistory, RoundPrompts, Scribble

W, H = 640, 480


def full_dict():
    return {
        "box": [10, 20, 300, 400],
        "clicks": [[50, 60, True], [70.5, 80.25, False]],
        "scribbles": [{"points": [[1, 2], [30, 40]], "positive": False, "width": 8}],
        "text": "  the   person on the left ",
    }


def test_from_dict_round_trip():
    r = RoundPrompts.from_dict(full_dict(), W, H)
    assert r.box == Box(10, 20, 300, 400)
    assert r.clicks == (Click(50, 60, True), Click(70.5, 80.25, False))
    assert r.scribbles[0].points == ((1.0, 2.0), (30.0, 40.0)) and r.scribbles[0].width == 8.0
    assert r.text == "the person on the left"
    again = RoundPrompts.from_dict(r.to_dict(), W, H)
    assert again == r


def test_missing_keys_mean_none_and_edges_are_inside():
    r = RoundPrompts.from_dict({"clicks": [[0, 0, 1], [W, H, 0]]}, W, H)
    assert r.box is None and r.text is None and r.scribbles == ()
    assert [c.positive for c in r.clicks] == [True, False]


@pytest.mark.parametrize(
    "d, fragment",
    [
        ({"clicks": [[700, 10, True]]}, "700"),
        ({"clicks": [[-1, 10, True]]}, "640x480"),
        ({"box": [0, 0, 10, 481]}, "481"),
        ({"scribbles": [{"points": [[5, 5], [5, 900]]}]}, "900"),
        ({"box": [10, 10, 10, 50]}, "degenerate"),
        ({"box": [20, 10, 10, 50]}, "degenerate"),
        ({"box": [1, 2, 3]}, "box must be"),
        ({"text": "   "}, "empty"),
        ({"text": 5}, "string"),
        ({"clicks": [[float("nan"), 1, True]]}, "finite"),
        ({"clicks": [[float("inf"), 1, True]]}, "finite"),
        ({"clicks": [["1", 1, True]]}, "number"),
        ({"clicks": [[1, 1, "yes"]]}, "true or false"),
        ({"clicks": [[1, 1]]}, "click 0"),
        ({"scribbles": [{"points": []}]}, "at least one point"),
        ({"scribbles": [{"points": [[1, 1]], "width": 0}]}, "width"),
        ({"scribbles": [{"points": [[1, 1]], "colour": "red"}]}, "unknown"),
        ({"scribbles": [{"positive": True}]}, "no points"),
        ({"boxes": [1, 2, 3, 4]}, "unknown prompt keys"),
        ({}, "empty round"),
        ({"box": None, "clicks": [], "scribbles": [], "text": None}, "empty round"),
    ],
)
def test_bad_prompts_raise_clear_errors(d, fragment):
    with pytest.raises(PromptError, match=fragment):
        RoundPrompts.from_dict(d, W, H)


def test_errors_are_value_errors_and_input_untouched():
    d = full_dict()
    d["clicks"].append([1e9, 0, True])
    snapshot = repr(d)
    with pytest.raises(ValueError):
        RoundPrompts.from_dict(d, W, H)
    assert repr(d) == snapshot


def test_not_a_dict_and_bad_image_size():
    with pytest.raises(PromptError, match="dict"):
        RoundPrompts.from_dict([1, 2], W, H)
    with pytest.raises(PromptError, match="image size"):
        RoundPrompts.from_dict({"text": "x"}, 0, H)


def test_allow_empty_round():
    assert RoundPrompts.from_dict({}, W, H, allow_empty=True).is_empty()


def test_numpy_scalars_are_accepted():
    c = Click(np.float32(3.5), np.int64(4), np.bool_(False))
    assert (c.x, c.y, c.positive) == (3.5, 4.0, False)


def test_bool_is_not_a_coordinate():
    with pytest.raises(PromptError, match="number"):
        Click(True, 3)


def test_scaled():
    r = RoundPrompts.from_dict(full_dict(), W, H).scaled(0.5, 2.0)
    assert r.box == Box(5, 40, 150, 800)
    assert r.clicks[0] == Click(25, 120, True)
    assert math.isclose(r.scribbles[0].width, 8.0)
    assert r.text == "the person on the left"
    with pytest.raises(PromptError):
        r.scaled(0, 1)


def test_history_accumulates_and_latest_wins():
    h = PromptHistory()
    h.add(RoundPrompts(box=Box(0, 0, 10, 10), text="the person"))
    h.add(RoundPrompts(clicks=(Click(1, 1),), scribbles=(Scribble(((1, 1), (2, 2))),)))
    h.add(RoundPrompts(clicks=(Click(2, 2, False),), box=Box(1, 1, 9, 9)))
    assert len(h) == 3 and len(h.rounds) == 3
    assert h.clicks == (Click(1, 1), Click(2, 2, False))
    assert len(h.scribbles) == 1
    assert h.box == Box(1, 1, 9, 9)
    assert h.text == "the person"
    merged = h.merged()
    assert merged.clicks == h.clicks and merged.box == h.box
    with pytest.raises(PromptError):
        h.add({"box": None})
    h.clear()
    assert h.box is None and h.text is None and h.clicks == ()


def test_frozen():
    c = Click(1, 2)
    with pytest.raises(AttributeError):
        c.x = 5


def test_box_grown_moves_each_side_by_its_fraction_and_clips_only_when_asked():
    box = Box(10.0, 20.0, 30.0, 60.0)  # 20 wide, 40 high
    assert box.grown(0.5, 0.25, 0.1, 0.0).as_list() == pytest.approx([0.0, 10.0, 32.0, 60.0])
    assert box.grown(1.0, 1.0, 1.0, 1.0).as_list() == pytest.approx([-10.0, -20.0, 50.0, 100.0])
    assert box.grown(1.0, 1.0, 1.0, 1.0, 40, 90).as_list() == pytest.approx([0.0, 0.0, 40.0, 90.0])
