"""A person the finder left out, confirmed by the user's marks (`backend.runtime.weak_box`, `EngineOptions.weak_box`):
which weak detector boxes are candidates, and the engine choosing one the way `click_box` chooses a find."""

import numpy as np
import pytest

from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompts import Box
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions
from backend.runtime.person_nets import Boxes, CropMask
from backend.runtime.weak_box import MAX_TRIED, MIN_SCORE, candidate_boxes, on_picture

SHAPE = (140, 160)
FOUND = [20.0, 20.0, 70.0, 130.0]  # the one person the finder found, on the left
MISSED = [80.0, 30.0, 120.0, 130.0]  # a person it left out, on the right
CLICK = (100.0, 80.0)


def test_a_weak_box_holding_the_marks_is_a_candidate():
    boxes = np.array([MISSED], np.float32)
    assert candidate_boxes(boxes, np.array([0.3]), [FOUND], [CLICK], 0.8) == [0]


def test_boxes_below_the_score_floor_off_the_marks_or_alike_a_found_box_are_not():
    boxes = np.array([MISSED, MISSED, [0.0, 0.0, 50.0, 50.0], [22.0, 22.0, 70.0, 130.0]], np.float32)
    scores = np.array([MIN_SCORE - 0.01, 0.3, 0.3, 0.3])
    # Only the second: the first is too weak, the third misses the click, the fourth is the found person.
    assert candidate_boxes(boxes, scores, [FOUND], [CLICK, (25.0, 60.0)], 0.5) == [1]
    # With both marks required inside, no box holds them all.
    assert candidate_boxes(boxes, scores, [FOUND], [CLICK, (25.0, 60.0)], 0.8) == []


def test_candidates_come_highest_score_first_and_at_most_max_tried():
    n = MAX_TRIED + 2
    boxes = np.array([MISSED] * n, np.float32)
    scores = np.linspace(0.25, 0.39, n)
    assert candidate_boxes(boxes, scores, [], [CLICK], 0.8) == list(range(n - 1, n - 1 - MAX_TRIED, -1))
    assert candidate_boxes(boxes, scores, [], [], 0.8) == []


def test_blazeposes_mask_lands_on_a_downscaled_finder_picture():
    mask = np.zeros((100, 40), np.float32)
    mask[:, 10:30] = 1.0  # image columns 90-110 of the crop at x 80-120, rows 30-130
    crop = CropMask(mask, (80, 30, 120, 130), 0.99, np.zeros((39, 5), np.float32))
    person = on_picture(crop, (140, 160), (70, 80))  # the finder's picture at half size
    assert person.rect == (40, 15, 60, 65)
    assert person.holds(50, 40) and not person.holds(42, 40) and not person.holds(58, 40)
    empty = CropMask(np.zeros((0, 0), np.float32), (0, 0, 0, 0), 0.0, np.zeros((39, 5), np.float32))
    assert on_picture(empty, (140, 160), (70, 80)).mask.size == 0


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


@pytest.mark.parametrize(("on", "mask_holds_click", "used"), [(False, True, False), (True, True, True),
                                                               (True, False, False)])
def test_the_engine_takes_a_confirmed_weak_box_as_the_sessions_box(weights, monkeypatch, on, mask_holds_click,
                                                                    used):
    import backend.runtime.people
    import backend.runtime.person_nets
    from backend.runtime.people import Found

    image = np.random.default_rng(0).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
    left = np.zeros(SHAPE, bool)
    left[25:125, 25:62] = True

    class _Finder:
        def find(self, picture, **_):
            return Found(small=picture, people=[(FOUND, left)])

    class _NanoDet:
        def __init__(self, score_threshold, **_):
            assert score_threshold == MIN_SCORE

        def __call__(self, picture):
            return Boxes(np.array([MISSED], np.float32), np.array([0.3], np.float32))

    class _BlazePose:
        def __init__(self, **_):
            pass

        def __call__(self, picture, boxes):
            assert np.array_equal(boxes, np.array([MISSED], np.float32))
            x0, x1 = (85, 118) if mask_holds_click else (108, 118)  # BlazePose's person, with or without the click
            mask = np.zeros((100, 40), np.float32)
            mask[:, x0 - 80:x1 - 80] = 1.0
            return [CropMask(mask, (80, 30, 120, 130), 0.99, np.zeros((39, 5), np.float32))]

    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    monkeypatch.setattr(backend.runtime.person_nets, "NanoDet", _NanoDet)
    monkeypatch.setattr(backend.runtime.person_nets, "BlazePoseSeg", _BlazePose)
    engine = Engine.load(device="cpu", weights=weights, runtime="torch",
                         options=EngineOptions(pose_prior=False, focus=False, weak_box=on))
    seen = []
    original = engine._localise
    monkeypatch.setattr(engine, "_localise", lambda s, history, new, *a: seen.append(
        history.rounds[0].box) or original(s, history, new, *a))
    sid = engine.open(image)
    engine.predict(sid, {"clicks": [[*CLICK, True]]})
    assert seen[-1] == (Box(*MISSED) if used else None)
    assert ("weak_box" in engine.rules(sid)[0]) is used and ("click_box" in engine.rules(sid)[0]) is used
    # Unlike a find's box, it answers the first round only: later rounds correct with the marks alone.
    engine.predict(sid, {"clicks": [[110.0, 40.0, True]]})
    assert seen[-1] is None and not any("click_box" in r for r in engine.rules(sid)[1:])
    assert engine._sessions[sid].history.box is None and engine._sessions[sid].click_box is None


def test_the_switch_is_on_by_default_and_follows_the_environment():
    assert EngineOptions().weak_box is True
    assert EngineOptions.from_env({"DFIMAT_WEAK_BOX": "1"}).weak_box is True
    assert EngineOptions.from_env({"DFIMAT_WEAK_BOX": "0"}).weak_box is False
