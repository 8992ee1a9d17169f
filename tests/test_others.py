"""Other people out of a box's matte (`backend.runtime.others`): the rule on hand-made masks, and that the engine applies it
only while the prompts are a box alone. The accuracy effect is measured in docs/experiments.md ("Other people taken out of a box's matte")."""

import numpy as np
import pytest
import torch

import backend.runtime.people
from backend.dfimat.model import build_tiny_checkpoint
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions
from backend.runtime.others import (
    MIN_TARGET_IOU,
    TARGET_GROW_PX,
    FoundPerson,
    marked,
    others_mask,
    take_out_others,
)
from backend.runtime.people import Found

torch.set_num_threads(1)
H, W = 100, 160


def _person(x0: int, y0: int, x1: int, y1: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


LEFT, RIGHT = _person(20, 10, 60, 90), _person(60, 10, 100, 90)  # side by side, touching


def test_found_person_keeps_its_mask_cropped_and_pastes_it_back():
    p = FoundPerson.from_mask(RIGHT)
    assert p.rect == (60, 10, 100, 90) and p.mask.shape == (80, 40)
    assert np.array_equal(p.paste((H, W)), RIGHT)
    assert not FoundPerson.from_mask(np.zeros((H, W), bool)).paste((H, W)).any()


def test_overlap_within_the_rectangles_counts_as_the_finder_does():
    from backend.runtime.people import _overlap

    finds = [LEFT, RIGHT, _person(20, 10, 60, 60), _person(50, 50, 80, 95), _person(120, 0, 130, 5)]
    for a in finds:
        for b in finds:
            assert FoundPerson.from_mask(a).overlap(FoundPerson.from_mask(b)) == pytest.approx(_overlap(a, b))


def test_a_matte_that_is_nobody_found_loses_the_finds_beside_the_box_only_with_off_box():
    people = [FoundPerson.from_mask(RIGHT)]  # the boxed person (left) was missed; the neighbour was found
    selected = _person(20, 10, 90, 90)  # the matte spans the boxed person and most of the neighbour
    box = (20.0, 10.0, 60.0, 90.0)
    assert others_mask(selected, people) is None
    out = others_mask(selected, people, off_box=box)
    assert out is not None and np.array_equal(out, RIGHT)
    # A find that fills the box is the boxed person, not someone beside it; a spared (marked) find stays.
    assert others_mask(selected, [FoundPerson.from_mask(LEFT | _person(60, 10, 64, 90))], off_box=box) is None
    assert others_mask(selected, people, spared={0}, off_box=box) is None
    # Through the engine's call, the box is given in image pixels and the finds are on a half-size picture.
    alpha = selected.astype(np.float32)
    small = [FoundPerson.from_mask(RIGHT[::2, ::2])]
    assert take_out_others(alpha, small, (H // 2, W // 2), off_box=list(box))
    assert alpha[50, 40] == 1.0 and alpha[50, 80] == 0.0


def test_the_other_finds_are_taken_out_around_the_selected_one():
    people = [FoundPerson.from_mask(LEFT), FoundPerson.from_mask(RIGHT)]
    selected = LEFT | _person(60, 40, 90, 60)  # the matte spills onto the right-hand person
    out = others_mask(selected, people)
    assert out is not None
    # The right-hand person is out, except a band of TARGET_GROW_PX along the selected person's find.
    assert out[50, 90] and not out[50, 40]
    assert not out[50, 60 + TARGET_GROW_PX - 1] and out[50, 60 + TARGET_GROW_PX]


def test_nothing_is_taken_out_when_the_matte_is_nobody_found():
    people = [FoundPerson.from_mask(LEFT), FoundPerson.from_mask(RIGHT)]
    assert others_mask(_person(110, 10, 150, 90), people) is None  # a person the finder missed
    assert others_mask(LEFT, people[:1]) is None  # one find: nobody else to take out
    half = _person(20, 10, 40, 90)  # IoU 0.5 with the left find exactly: still it
    assert others_mask(half, people) is not None
    assert others_mask(_person(20, 10, 39, 90), people) is None


def test_a_find_overlapping_the_selected_one_is_the_same_person():
    upper = FoundPerson.from_mask(_person(20, 10, 60, 60))
    people = [FoundPerson.from_mask(LEFT), upper]  # a second, partial find of the left person
    assert others_mask(LEFT, people) is None


def test_a_find_under_a_positive_mark_is_never_taken_out():
    people = [FoundPerson.from_mask(LEFT), FoundPerson.from_mask(RIGHT)]
    # Marks in image pixels on a photo twice the finder's picture.
    assert marked(people, [(170.0, 100.0)], (0.5, 0.5)) == {1}
    assert marked(people, [(10.0, 10.0), (80.0, 100.0)], (0.5, 0.5)) == {0}
    assert others_mask(LEFT, people, spared={1}) is None
    alpha = np.zeros((2 * H, 2 * W), np.float32)
    alpha[20:180, 40:120] = 1.0
    alpha[80:120, 120:180] = 0.8
    assert not take_out_others(alpha, people, (H, W), positives=[(170.0, 100.0)])
    assert alpha[100, 170] == pytest.approx(0.8)
    # A positive mark on the selected person itself spares nobody else.
    assert take_out_others(alpha, people, (H, W), positives=[(80.0, 100.0)]) and alpha[100, 170] == 0.0


def test_take_out_works_from_a_downscaled_finder_picture():
    alpha = np.zeros((2 * H, 2 * W), np.float32)
    alpha[20:180, 40:120] = 1.0  # the left person at full size
    alpha[80:120, 120:180] = 0.8  # spill onto the right one
    people = [FoundPerson.from_mask(LEFT), FoundPerson.from_mask(RIGHT)]
    before = alpha.copy()
    assert take_out_others(alpha, people, (H, W))
    assert alpha[100, 170] == 0.0 and alpha[100, 80] == 1.0
    assert np.array_equal(alpha[:, :120], before[:, :120])
    assert not take_out_others(np.zeros((2 * H, 2 * W), np.float32), people, (H, W))


class _Finder:
    """The finder's answer for the test photo: the two people above, on the photo itself."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def find(self, image: np.ndarray, **kw: bool) -> Found:
        self.calls.append(kw)
        return Found(small=image, people=[([20.0, 10.0, 60.0, 90.0], LEFT), ([60.0, 10.0, 100.0, 90.0], RIGHT)])


@pytest.fixture
def engine(tmp_path, monkeypatch):
    engine = Engine.load(device="cpu", weights=build_tiny_checkpoint(tmp_path / "tiny.pt"), runtime="torch",
                         focus=False, pose_prior=False, take_out_others=True)
    # The networks' answer: the left person plus a spill onto the right one, whatever the prompts.
    spill = (LEFT | _person(60, 40, 90, 60)).astype(np.float32)
    monkeypatch.setattr(engine, "_refine", lambda image, lb, coarse, out=None, prior=None: spill.copy())
    monkeypatch.setattr(engine, "_localise", lambda s, h, n, view=None: np.ones((32, 32), np.float32))
    return engine


def test_engine_takes_others_out_of_box_sessions_unless_a_mark_asks_for_them(engine, monkeypatch):
    finder = _Finder()
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: finder)
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    sid = engine.open(image)
    alpha = engine.predict(sid, {"box": [10.0, 5.0, 120.0, 95.0]})
    assert alpha[50, 85] == 0.0 and alpha[50, 40] == 1.0
    # A corrective click on the person keeps the neighbour out; a positive click on the neighbour brings it back.
    alpha = engine.predict(sid, {"clicks": [[40.0, 50.0, True]]})
    assert alpha[50, 85] == 0.0 and alpha[59, 63] == 0.0
    alpha = engine.predict(sid, {"clicks": [[85.0, 50.0, True]]})
    # (59, 63) lies on the neighbour beyond the click's own kept disk (at most 4 cells of 5 px): spared, not marked.
    assert alpha[59, 63] == 1.0
    # Found once per session, by the whole-frame passes alone (the cheap finder measured for this).
    assert finder.calls == [{"tiles": False, "faces": False}]
    # A box with text names a person already; marks alone have no box.
    for prompts in ({"box": [10.0, 5.0, 120.0, 95.0], "text": "the person on the left"},
                    {"clicks": [[40.0, 50.0, True]]}):
        other = engine.open(image)
        assert engine.predict(other, prompts)[50, 85] == 1.0
    off = engine.open(image)
    engine.options = engine.options.with_overrides(take_out_others=False)
    assert engine.predict(off, {"box": [10.0, 5.0, 120.0, 95.0]})[50, 85] == 1.0


def test_a_text_round_after_a_box_round_runs_the_whole_finder(engine, monkeypatch):
    finder = _Finder()
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: finder)
    sid = engine.open(np.zeros((H, W, 3), np.uint8))
    engine.predict(sid, {"box": [10.0, 5.0, 120.0, 95.0]})
    engine.reset(sid)
    engine.predict(sid, {"text": "the person on the left"})
    assert finder.calls == [{"tiles": False, "faces": False}, {"tiles": True, "faces": False, "paint_known": True}]
    assert len(engine._sessions[sid].candidates) == 2 and len(engine._sessions[sid].found) == 2


def test_without_a_finder_the_box_round_is_the_networks_answer(engine, monkeypatch):
    def missing(kind, *_):
        raise RuntimeError("listing every person needs mediapipe")

    monkeypatch.setattr(backend.runtime.people, "people_finder", missing)
    image = np.zeros((H, W, 3), np.uint8)
    alpha = engine.predict(engine.open(image), {"box": [10.0, 5.0, 120.0, 95.0]})
    assert alpha[50, 85] == 1.0 and engine.options.take_out_others is False


@pytest.mark.parametrize("on", [False, True])
def test_a_box_matte_that_is_nobody_found_loses_the_person_beside_the_box_only_with_off_box(engine, monkeypatch, on):
    """The engine passes the user's box to the take-out only with `off_box` (default on)."""
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    # The networks answer with the whole photo; cut to the box (grown 5 %: columns 0-78), that matte is nobody found.
    monkeypatch.setattr(engine, "_refine", lambda image, lb, coarse, out=None, prior=None: np.ones((H, W), np.float32))
    support = _person(0, 0, 79, H)
    assert FoundPerson.from_mask(LEFT).iou(support, int(support.sum())) < MIN_TARGET_IOU
    engine.options = engine.options.with_overrides(off_box=on)
    sid = engine.open(np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8))
    alpha = engine.predict(sid, {"box": [0.0, 0.0, 75.0, 100.0]})  # around the left person, over part of the right
    assert alpha[50, 40] == 1.0 and alpha[50, 10] == 1.0 and alpha[50, 80] == 0.0
    assert bool(alpha[50, 70] == 0.0) is on  # the right person's part inside the box
    assert ("take_out_others" in engine.rules(sid)[-1]) is on


def test_the_switch_follows_the_environment(tmp_path, monkeypatch):
    weights = build_tiny_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.setenv("DFIMAT_TAKE_OUT_OTHERS", "0")
    assert Engine.load(device="cpu", weights=weights, runtime="torch").options.take_out_others is False
    monkeypatch.delenv("DFIMAT_TAKE_OUT_OTHERS")
    assert Engine.load(device="cpu", weights=weights, runtime="torch").options.take_out_others is True
    assert EngineOptions().off_box is True
    assert EngineOptions.from_env({"DFIMAT_OFF_BOX": "0"}).off_box is False


def test_every_person_runs_the_finder_once_and_takes_the_others_out(engine, monkeypatch):
    finder = _Finder()
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: finder)
    image = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    mattes = backend.runtime.people.matte_people(engine, image, {}, every_person=True)
    assert [box for box, _ in mattes] == [[20.0, 10.0, 60.0, 90.0], [60.0, 10.0, 100.0, 90.0]]
    assert len(finder.calls) == 1  # the split's boxes and each round's take-out share one find


@pytest.mark.parametrize("cut", [False, True])
def test_a_click_session_take_out_cuts_the_networks_grid_only_when_asked(engine, monkeypatch, cut):
    """`EngineOptions.take_out_prev`: the grid the next round's networks compare with loses what the take-out cut
    from the matte (the neighbour), so a take-out in the first round only does not let the neighbour back in."""
    finder = _Finder()
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: finder)
    engine.options = engine.options.with_overrides(take_out_marks="first", take_out_prev=cut)
    sid = engine.open(np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8))
    alpha = engine.predict(sid, {"clicks": [[40.0, 50.0, True]]})
    assert alpha[50, 85] == 0.0 and "take_out_others" in engine.rules(sid)[-1]
    prev = engine._sessions[sid].prev
    per_px = prev.shape[0] / W  # the model square spans the photo's longer side
    # On the spill beyond the grown target find (x 63-90, y 40-60): cut; on the target itself: as the networks said.
    assert prev[int(52 * per_px), int(77 * per_px)] == pytest.approx(0.0 if cut else 1.0)
    assert prev[int(52 * per_px), int(40 * per_px)] == pytest.approx(1.0)
    # Box sessions keep their grid whatever the switch says (measured without it).
    box = engine.open(np.zeros((H, W, 3), np.uint8))
    engine.predict(box, {"box": [10.0, 5.0, 120.0, 95.0]})
    assert engine._sessions[box].prev[int(52 * per_px), int(77 * per_px)] == pytest.approx(1.0)


def test_cut_grid_follows_a_focus_region():
    from backend.runtime.engine import _cut_grid
    from backend.runtime.focus import RegionBox

    rb = RegionBox(height=50, width=100, size=64, x0=30, y0=20)  # content 32 x 64 of the square, 8 x 16 cells
    removed = np.zeros((50, 100), np.float32)
    removed[:, 50:] = 1.0  # the region's right half was taken out
    grid = np.ones((16, 16), np.float32)
    cut = _cut_grid(grid, rb, removed)
    assert np.allclose(cut[:8, 8:], 0.0, atol=1e-5) and np.all(cut[:8, :8] == 1.0)
    assert np.all(cut[8:] == 1.0)  # the square's padding holds no photo
    assert np.all(grid == 1.0)  # a copy: the caller's grid stays as it was


def test_a_point_is_near_a_find_within_reach_of_its_mask_not_of_its_rectangle():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:20] = True
    mask[10:12, 20:30] = True  # an arm: the rectangle reaches x = 29, the body x = 19
    find = FoundPerson.from_mask(mask)
    assert find.near(15.0, 20.0) and find.near(22.0, 20.0)  # inside; 3 px beyond the body
    assert not find.near(24.0, 20.0)  # inside the rectangle, 5 px from the mask
    assert find.reaches(24.0, 20.0)
    assert find.near(15.0, 32.0) and not find.near(15.0, 34.0)  # below the feet: 3 px reach, not 5
