"""A negative mark on a found person takes that person out (`backend.runtime.others.take_out_refused`,
`EngineOptions.take_out_refused`, on by default): the rule on hand-made finds, and the engine applying it only when
switched on. Why it is on is in docs/experiments.md ("People networks")."""

import numpy as np
import pytest
import torch

import backend.runtime.people
from backend.dfimat.model import build_tiny_checkpoint
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions
from backend.runtime.others import REFUSED_ENGULFED, TARGET_GROW_PX, FoundPerson, take_out_refused
from backend.runtime.people import Found

torch.set_num_threads(1)
H, W = 100, 160


def _find(x0: int, y0: int, x1: int, y1: int) -> FoundPerson:
    """A rectangular person on the finder's picture (H x W)."""
    return FoundPerson((x0, y0, x1, y1), np.ones((y1 - y0, x1 - x0), bool))


PEOPLE = [_find(20, 10, 60, 90), _find(60, 10, 100, 90)]  # side by side, touching
LEFT, RIGHT = (p.paste((H, W)) for p in PEOPLE)


def _both() -> np.ndarray:
    return (LEFT | RIGHT).astype(np.float32)


def test_a_negative_click_on_an_engulfed_person_takes_them_out_and_spares_the_clicked_one():
    alpha = _both()
    assert take_out_refused(alpha, PEOPLE, (H, W), positives=[(40.0, 50.0)], negatives=[(85.0, 50.0)])
    assert alpha[50, 40] == 1.0 and alpha[50, 85] == 0.0
    # The clicked person's mask, grown by TARGET_GROW_PX, keeps its pixels where the refused mask meets it.
    assert alpha[50, 60 + TARGET_GROW_PX - 1] == 1.0 and alpha[50, 60 + TARGET_GROW_PX] == 0.0


def test_nothing_is_cut_unless_the_matte_engulfs_the_refused_person():
    alpha = LEFT.astype(np.float32)
    spill = _find(60, 10, 100, 40).paste((H, W))  # 30 of RIGHT's 80 rows: less than REFUSED_ENGULFED of them
    assert spill.sum() < REFUSED_ENGULFED * RIGHT.sum()
    alpha[spill] = 1.0
    before = alpha.copy()
    assert not take_out_refused(alpha, PEOPLE, (H, W), positives=[(40.0, 50.0)], negatives=[(85.0, 20.0)])
    assert np.array_equal(alpha, before)


@pytest.mark.parametrize("positive", [(85.0, 60.0), (101.0, 60.0)])
def test_a_person_a_positive_mark_is_on_or_near_is_never_taken_out(positive):
    alpha = _both()
    assert not take_out_refused(alpha, PEOPLE, (H, W), positives=[positive], negatives=[(85.0, 50.0)])
    assert alpha[50, 85] == 1.0


def test_a_negative_mark_off_every_find_cuts_nothing():
    alpha = _both()
    assert not take_out_refused(alpha, PEOPLE, (H, W), positives=[(40.0, 50.0)], negatives=[(130.0, 50.0)])
    assert not take_out_refused(alpha, PEOPLE, (H, W), positives=[(40.0, 50.0)], negatives=[])
    assert np.array_equal(alpha, _both())


def test_the_cut_works_from_a_downscaled_finder_picture():
    alpha = np.zeros((2 * H, 2 * W), np.float32)
    alpha[20:180, 40:200] = 1.0  # both people at twice the finder's size
    assert take_out_refused(alpha, PEOPLE, (H, W), positives=[(80.0, 100.0)], negatives=[(170.0, 100.0)])
    assert alpha[100, 80] == 1.0 and alpha[100, 170] == 0.0


class _Finder:
    def find(self, image: np.ndarray, **kw: bool) -> Found:
        return Found(small=image, people=[([20.0, 10.0, 60.0, 90.0], LEFT), ([60.0, 10.0, 100.0, 90.0], RIGHT)])


@pytest.fixture
def engine(tmp_path, monkeypatch):
    engine = Engine.load(device="cpu", weights=build_tiny_checkpoint(tmp_path / "tiny.pt"), runtime="torch",
                         focus=False, pose_prior=False)
    # The networks answer every round with both people: the engulfing answer the rule is for.
    monkeypatch.setattr(engine, "_refine", lambda image, lb, coarse, out=None, prior=None: _both())
    monkeypatch.setattr(engine, "_localise", lambda s, h, n, view=None: np.ones((32, 32), np.float32))
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    return engine


@pytest.mark.parametrize("on", [False, True])
def test_the_engine_takes_a_refused_person_out_only_when_switched_on(engine, on):
    engine.options = engine.options.with_overrides(take_out_refused=on, click_box=False)
    sid = engine.open(np.random.default_rng(4).integers(0, 256, (H, W, 3), dtype=np.uint8))
    engine.predict(sid, {"clicks": [[40.0, 50.0, True]]})
    alpha = engine.predict(sid, {"clicks": [[85.0, 50.0, False]]})
    assert alpha[50, 40] == 1.0
    # Off: the negative click holds only its own disk, the rest of the neighbour stays.
    assert bool(alpha[80, 90] == 0.0) is on
    assert ("take_out_refused" in engine.rules(sid)[-1]) is on
    # The refusal stays for the session: the next round's positive click on the person keeps them out.
    alpha = engine.predict(sid, {"clicks": [[30.0, 30.0, True]]})
    assert bool(alpha[80, 90] == 0.0) is on


def test_a_negative_click_in_a_box_session_never_takes_the_boxed_person_out(engine):
    """In a box session no positive mark says which find is the target: a negative click on a spill of the target's
    own find must take out only what the click points at, not the person (held-out mixed sessions lost 0.7 IoU)."""
    engine.options = engine.options.with_overrides(take_out_refused=True, click_box=False)
    sid = engine.open(np.random.default_rng(4).integers(0, 256, (H, W, 3), dtype=np.uint8))
    engine.predict(sid, {"box": [15.0, 5.0, 62.0, 95.0]})
    alpha = engine.predict(sid, {"clicks": [[40.0, 85.0, False]]})
    assert alpha[20, 30] == 1.0 and alpha[50, 40] == 1.0  # the boxed (left) person stays
    assert alpha[85, 40] == 0.0  # what the click pointed at goes
    assert "take_out_refused" not in engine.rules(sid)[-1]


def test_the_switch_is_on_by_default_and_follows_the_environment():
    assert EngineOptions().take_out_refused is True
    assert EngineOptions.from_env({"DFIMAT_TAKE_OUT_REFUSED": "0"}).take_out_refused is False
