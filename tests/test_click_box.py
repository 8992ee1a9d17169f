"""The found person the marks are on prompts the networks with its detector box (`backend.runtime.click_box`), and the
engine's use of it: the first round carries the box, later rounds correct a box session, the matte is not bounded
by it and the session keeps what the user gave."""

import numpy as np
import pytest

from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompts import Box, PromptHistory, RoundPrompts
from backend.runtime.click_box import Chosen, grown_box, marked_find, refused
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions
from backend.runtime.others import FoundPerson

SHAPE = (140, 160)
LEFT, RIGHT = [20.0, 20.0, 70.0, 130.0], [60.0, 20.0, 110.0, 130.0]  # overlapping boxes of two people side by side


def _mask(x0: int, x1: int) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[25:125, x0:x1] = True
    return m


FINDS = [FoundPerson.from_mask(_mask(25, 62)), FoundPerson.from_mask(_mask(66, 105))]


def _history(*rounds: dict) -> PromptHistory:
    h = PromptHistory([])
    for r in rounds:
        h.add(RoundPrompts.from_dict(r, SHAPE[1], SHAPE[0]))
    return h


def _box(*rounds: dict) -> list[float] | None:
    k = marked_find(_history(*rounds), FINDS, SHAPE, SHAPE)
    return None if k is None else [LEFT, RIGHT][k]


def test_a_click_on_one_finds_mask_takes_that_finds_box():
    assert _box({"clicks": [[30.0, 60.0, True]]}) == LEFT
    assert _box({"clicks": [[100.0, 60.0, True]]}) == RIGHT
    # Within a few pixels of the mask (upsampled masks run short of the outline) still counts ...
    assert _box({"clicks": [[62.0, 60.0, True]]}) == LEFT
    # ... but not a click in the box, off the mask: on fresh composites that was someone the finder missed.
    assert _box({"clicks": [[40.0, 10.0, True]]}) is None
    assert _box({"clicks": [[150.0, 60.0, True]]}) is None


def test_a_click_within_reach_of_two_masks_takes_neither():
    finds = [FoundPerson.from_mask(_mask(25, 62)), FoundPerson.from_mask(_mask(65, 105))]
    history = _history({"clicks": [[63.0, 60.0, True]]})
    assert marked_find(history, finds, SHAPE, SHAPE) is None


def test_marks_on_two_people_or_a_negative_mark_on_the_find_leave_the_box_out():
    assert _box({"clicks": [[30.0, 60.0, True], [100.0, 60.0, True]]}) is None
    assert _box({"clicks": [[30.0, 60.0, True]]}, {"clicks": [[40.0, 100.0, False]]}) is None
    assert _box({"clicks": [[30.0, 60.0, True]]}, {"clicks": [[100.0, 100.0, False]]}) == LEFT  # on the other
    assert _box({"clicks": [[30.0, 60.0, False]]}) is None  # no positive mark
    assert marked_find(_history({"clicks": [[30.0, 60.0, True]]}), [], SHAPE, SHAPE) is None


def test_a_stroke_counts_by_its_share_of_vertices():
    inside = [[30.0, 40.0 + 5 * k] for k in range(9)]
    assert _box({"scribbles": [{"points": inside + [[75.0, 85.0]], "positive": True}]}) == LEFT  # 9 of 10
    assert _box({"scribbles": [{"points": inside[:6] + [[150.0, 60.0]] * 4, "positive": True}]}) is None


def test_marks_on_a_picture_of_another_size_are_scaled():
    half = [FoundPerson.from_mask(_mask(25, 62)[::2, ::2])]
    history = _history({"clicks": [[30.0, 60.0, True]]})
    assert marked_find(history, half, (70, 80), SHAPE) == 0
    assert marked_find(_history({"clicks": [[90.0, 60.0, True]]}), half, (70, 80), SHAPE) is None


def test_a_negative_mark_on_the_chosen_finds_mask_refuses_it():
    find = FINDS[0]  # mask: rows 25-124, columns 25-61

    def _refused(marks: dict, found_shape=SHAPE, f=find) -> bool:
        return refused(Chosen(f, Box(*LEFT), found_shape), RoundPrompts.from_dict(marks, SHAPE[1], SHAPE[0]), SHAPE)

    assert _refused({"clicks": [[40.0, 100.0, False]]})
    assert not _refused({"clicks": [[40.0, 100.0, True]]})  # a positive mark there confirms it
    # Just beside the outline a negative click corrects the edge, not the choice of person.
    assert not _refused({"clicks": [[63.0, 100.0, False]]})
    assert not _refused({"clicks": [[100.0, 100.0, False]]})  # on the other person
    assert _refused({"scribbles": [{"points": [[70.0, 60.0], [50.0, 60.0]], "positive": False}]})  # a stroke's vertex
    half = FoundPerson.from_mask(_mask(25, 62)[::2, ::2])  # masks on the finder's smaller picture
    assert _refused({"clicks": [[40.0, 100.0, False]]}, (70, 80), half)
    assert not _refused({"clicks": [[80.0, 100.0, False]]}, (70, 80), half)


def test_the_box_grows_to_hold_every_positive_mark_within_the_image():
    box = Box(*LEFT)  # 50 x 110
    assert grown_box(box, _history({"clicks": [[30.0, 60.0, True]]}), 160, 140) == box  # inside: unchanged
    grown = grown_box(box, _history({"clicks": [[30.0, 60.0, True]]}, {"clicks": [[80.0, 135.0, True]]}), 160, 140)
    assert grown == Box(20.0, 20.0, 82.5, 140.0)  # 2.5 px right of the mark; the frame's edge below
    # Negative marks do not move it.
    assert grown_box(box, _history({"clicks": [[30.0, 60.0, True], [5.0, 5.0, False]]}), 160, 140) == box


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


class _TwoFinds:
    """The people finder's view of the photo: the two people side by side."""

    def find(self, picture, **_):
        from backend.runtime.people import Found

        return Found(small=picture, people=[(LEFT, _mask(25, 62)), (RIGHT, _mask(66, 105))])


def _watched(weights, monkeypatch, options: EngineOptions, note):
    """An engine whose finder sees the two people, a session on a noise photo, and the list that ``note(history,
    new)`` fills each time the networks are asked."""
    import backend.runtime.people

    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _TwoFinds())
    engine = Engine.load(device="cpu", weights=weights, runtime="torch", options=options)
    seen = []
    original = engine._localise
    monkeypatch.setattr(engine, "_localise", lambda s, history, new, *a: seen.append(
        note(history, new)) or original(s, history, new, *a))
    return engine, engine.open(np.random.default_rng(0).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)), seen


@pytest.mark.parametrize(("on", "agreement", "cover", "cover_on", "used"), [
    (False, 0.9, 1.0, False, False), (True, 0.9, 1.0, False, True), (True, 0.1, 0.2, False, False),
    # An answer that spilled onto the neighbours (low IoU) but holds most of the find: only with click_box_cover.
    (True, 0.1, 0.9, False, False), (True, 0.1, 0.9, True, True), (True, 0.1, 0.4, True, False),
])
def test_the_networks_see_the_finds_box_as_a_prompt_for_the_session(weights, monkeypatch, on, agreement, cover,
                                                                     cover_on, used):
    import backend.runtime.engine

    # How well the marks' own answer agrees with the find decides; the tiny test network's answer is noise.
    compared = []
    monkeypatch.setattr(backend.runtime.engine, "_overlaps",
                        lambda mask, *_: compared.append(mask) or (agreement, cover))
    options = EngineOptions(pose_prior=False, click_box=on, focus=False, click_box_cover=cover_on)
    engine, sid, seen = _watched(weights, monkeypatch, options, lambda history, new: (history.rounds[0].box, new.box))
    engine.predict(sid, {"clicks": [[30.0, 60.0, True]]})
    assert seen[-1] == ((Box(*LEFT), Box(*LEFT)) if used else (None, None))
    if not used:  # the marks' own answer, asked for the comparison, is the round's answer: the networks ran once
        assert len(seen) == 1
    assert ("click_box" in engine.rules(sid)[0]) is used
    if on:  # the find's mask was compared with the marks' answer
        assert compared and compared[0].sum() == _mask(25, 62).sum()
    assert "box_support" not in engine.rules(sid)[0]  # the matte is not bounded by a box the user never drew
    compared.clear()
    engine.predict(sid, {"clicks": [[150.0, 60.0, True]]})  # beyond the box: the matte may grow there
    engine.predict(sid, {"clicks": [[40.0, 131.0, False]]})  # below the find's mask
    # The first round's choice holds for the session, without asking again; the session keeps the user's prompts.
    assert [("click_box" in r) for r in engine.rules(sid)] == [used] * 3 and not compared
    # ... and the box the networks see grows to hold the positive click beyond it (5 % of its width further).
    assert seen[-1] == ((Box(20.0, 20.0, 152.5, 130.0), None) if used else (None, None))
    assert engine._sessions[sid].history.box is None
    # A negative click on the find's mask gives its box up for the rest of the session.
    engine.predict(sid, {"clicks": [[40.0, 100.0, False]]})
    engine.predict(sid, {"clicks": [[30.0, 60.0, True]]})
    assert [("click_box" in r) for r in engine.rules(sid)] == [used] * 3 + [False] * 2 and not compared
    assert seen[-1] == (None, None)
    engine.reset(sid)
    engine.predict(sid, {"clicks": [[100.0, 60.0, True], [150.0, 60.0, True]]})  # after a reset: marks on no one find
    assert "click_box" not in engine.rules(sid)[0]
    engine.predict(sid, {"clicks": [[100.0, 60.0, True]]})
    assert "click_box" not in engine.rules(sid)[1]


@pytest.mark.parametrize(("prompts", "used"), [
    ({"text": "the person on the left", "clicks": [[30.0, 60.0, True]]}, True),  # text with a click: the click's find
    ({"text": "the person on the left"}, False),  # text alone: grounding's business, not the marks'
    ({"box": [10.0, 10.0, 80.0, 135.0], "clicks": [[30.0, 60.0, True]]}, False),  # the user's own box stays
])
def test_a_sentence_with_marks_still_takes_the_marked_finds_box(weights, monkeypatch, prompts, used):
    import backend.runtime.engine

    monkeypatch.setattr(backend.runtime.engine, "_overlaps", lambda *_: (0.9, 1.0))
    engine, sid, seen = _watched(weights, monkeypatch,
                                 EngineOptions(pose_prior=False, focus=False, text_grounding=False),
                                 lambda history, new: (history.rounds[0].box, history.text))
    engine.predict(sid, prompts)
    assert ("click_box" in engine.rules(sid)[0]) is used
    if used:  # the networks see the find's box and still the sentence
        assert seen[-1] == (Box(*LEFT), "the person on the left")
    assert engine._sessions[sid].history.box == (Box(*prompts["box"]) if "box" in prompts else None)


def test_overlaps_tells_an_answer_that_spilled_past_its_person_from_one_on_someone_else():
    from backend.dfimat.encoder import Letterbox
    from backend.runtime.engine import _overlaps

    lb = Letterbox(height=40, width=40, size=40)
    answer = np.zeros((10, 10), np.float32)
    answer[:, :6] = 1.0  # the networks' answer: the left 60 % of the photo, on a 10 x 10 grid
    person = np.zeros((40, 40), bool)
    person[8:32, 4:12] = True  # a find well inside that answer
    iou, cover = _overlaps(person, answer, lb, (40, 40))
    assert iou == pytest.approx(person.sum() / (40 * 24)) and cover == 1.0
    elsewhere = np.zeros((40, 40), bool)
    elsewhere[8:32, 28:36] = True  # a find on the other side
    assert _overlaps(elsewhere, answer, lb, (40, 40)) == (0.0, 0.0)


@pytest.mark.parametrize("mode", ["off", "all", "corrective"])
def test_click_box_support_cuts_the_matte_to_the_finds_box_in_the_rounds_it_names(weights, monkeypatch, mode):
    import backend.runtime.engine

    monkeypatch.setattr(backend.runtime.engine, "_overlaps", lambda *_: (0.9, 1.0))
    options = EngineOptions(pose_prior=False, focus=False, click_box_support=mode, take_out_others=False,
                            local_corrections="off")
    engine, sid, _ = _watched(weights, monkeypatch, options, lambda history, new: None)
    # LEFT (20, 20, 70, 130) grown by the drawn box's 5 % margin on each side: 17.5-72.5 by 14.5-135.5.
    outside = np.ones(SHAPE, bool)
    outside[14:136, 17:73] = False
    alpha = engine.predict(sid, {"clicks": [[30.0, 60.0, True]]})
    assert "click_box" in engine.rules(sid)[0]
    cut = mode == "all"
    assert ("box_support" in engine.rules(sid)[0]) is cut
    assert bool(alpha[outside].any()) is not cut  # the tiny network's noise reaches beyond the box unless cut
    alpha = engine.predict(sid, {"clicks": [[40.0, 125.0, False]]})  # a corrective round, off the find's mask
    cut = mode != "off"
    assert ("box_support" in engine.rules(sid)[1]) is cut
    assert bool(alpha[outside].any()) is not cut
    # A positive click beyond the box grows it, and the bound with it: the matte may reach the click.
    alpha = engine.predict(sid, {"clicks": [[120.0, 60.0, True]]})
    assert ("box_support" in engine.rules(sid)[2]) is cut
    assert alpha[60, 120] > 0.5  # the click holds (keep_marks)
