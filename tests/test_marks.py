"""Marks hold: every click and stroke ends up on its side of the returned matte (`backend.runtime.marks`), sized by where
the coarse mask already agrees; and the engine applies it. Accuracy effect: docs/experiments.md ("Marks and corrective rounds")."""

import numpy as np
import pytest
import torch

from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompts import Click, PromptHistory, RoundPrompts, Scribble
from backend.runtime.engine import Engine
from backend.runtime.marks import (
    MAX_RADIUS_CELLS,
    MIN_RADIUS_CELLS,
    click_radius,
    drop_unmarked_parts,
    keep_marks,
)

torch.set_num_threads(1)


def _history(*rounds: RoundPrompts) -> PromptHistory:
    return PromptHistory(list(rounds))


def _coarse_from(mask: np.ndarray):
    return lambda rect: mask[rect[1]:rect[3], rect[0]:rect[2]].astype(np.float32)


def test_click_radius_is_the_distance_to_the_nearest_disagreement_capped():
    agrees = np.ones((41, 41), bool)
    agrees[:, 30:] = False
    assert click_radius(agrees, (20, 20), 100.0) == pytest.approx(10.0)
    assert click_radius(agrees, (20, 20), 4.0) == 4.0
    assert click_radius(agrees, (35, 20), 100.0) == 0.0
    assert click_radius(np.ones((9, 9), bool), (4, 4), 3.0) == 3.0  # the window edge is no boundary


def test_a_positive_click_the_matte_dropped_comes_back_as_large_as_the_coarse_region_allows():
    alpha = np.zeros((100, 100), np.float32)
    coarse = np.zeros((100, 100), bool)
    coarse[40:60, 40:60] = True  # the ISCN said yes around the click, the refinement said no
    keep_marks(alpha, _history(RoundPrompts(clicks=(Click(50, 50, True),))), _coarse_from(coarse), cell=10.0)
    assert alpha[50, 50] == 1.0
    assert alpha[50, 40:60].max() == 1.0 and alpha[50, 52] == 1.0
    assert alpha[50, 35] == 0.0 and alpha[20, 20] == 0.0  # beyond the coarse region: untouched
    assert (alpha > 0.5).sum() <= np.pi * (MAX_RADIUS_CELLS * 10 + 1) ** 2


def test_a_click_the_coarse_mask_ignored_still_holds_in_a_small_disk():
    alpha = np.ones((100, 100), np.float32)
    coarse = np.ones((100, 100), bool)  # coarse disagrees with the negative click everywhere
    keep_marks(alpha, _history(RoundPrompts(clicks=(Click(50, 50, False),))), _coarse_from(coarse), cell=10.0)
    assert alpha[50, 50] == 0.0
    holes = (alpha < 0.5).sum()
    assert 0 < holes <= np.pi * (MIN_RADIUS_CELLS * 10 + 1) ** 2


def test_strokes_hold_along_their_painted_width_and_later_marks_win():
    alpha = np.full((60, 80), 0.7, np.float32)
    coarse = np.ones((60, 80), bool)
    first = RoundPrompts(scribbles=(Scribble(((10, 30), (70, 30)), False, 6.0),))
    second = RoundPrompts(clicks=(Click(40, 30, True),))
    keep_marks(alpha, _history(first, second), _coarse_from(coarse), cell=4.0)
    assert alpha[30, 15] == 0.0 and alpha[30, 65] == 0.0  # along the negative stroke
    assert alpha[20, 15] == pytest.approx(0.7)  # off the stroke: as refined
    assert alpha[30, 40] == 1.0  # the later positive click wins where they overlap


def test_marks_at_the_image_edge_and_single_point_strokes():
    alpha = np.zeros((20, 20), np.float32)
    coarse = np.zeros((20, 20), bool)
    keep_marks(alpha, _history(RoundPrompts(clicks=(Click(19.9, 0, True),),
                                            scribbles=(Scribble(((0, 19),), True, 4.0),))),
               _coarse_from(coarse), cell=4.0)
    assert alpha[0, 19] == 1.0 and alpha[19, 0] == 1.0


def test_parts_of_the_matte_without_a_positive_mark_are_dropped():
    alpha = np.zeros((60, 100), np.float32)
    alpha[10:30, 10:30] = 0.9  # the clicked person
    alpha[10:30, 60:90] = 0.8  # someone else
    alpha[40:50, 10:20] = 0.3  # a faint halo below 0.5: not a part
    history = _history(RoundPrompts(clicks=(Click(20, 20, True), Click(75, 20, False))))
    drop_unmarked_parts(alpha, history)
    assert alpha[20, 20] == pytest.approx(0.9) and alpha[20, 75] == 0.0 and alpha[45, 15] == pytest.approx(0.3)


def test_a_stroke_vertex_keeps_its_part_and_no_positive_mark_keeps_everything():
    alpha = np.zeros((60, 100), np.float32)
    alpha[10:30, 10:30] = alpha[10:30, 60:90] = 1.0
    stroke = RoundPrompts(scribbles=(Scribble(((70, 15), (80, 25)), True, 3.0),))
    drop_unmarked_parts(alpha, _history(stroke))
    assert alpha[20, 20] == 0.0 and alpha[20, 75] == 1.0
    alpha[10:30, 10:30] = 1.0
    drop_unmarked_parts(alpha, _history(RoundPrompts(clicks=(Click(50, 50, False),))))
    assert alpha[20, 20] == 1.0 and alpha[20, 75] == 1.0


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


@pytest.mark.parametrize("focus", [False, True])
def test_the_engine_keeps_every_mark_of_the_session(weights, monkeypatch, focus):
    monkeypatch.setenv("DFIMAT_KEEP_MARKS", "1")
    engine = Engine.load(device="cpu", weights=weights, runtime="torch", focus=focus, text_grounding=False,
                         pose_prior=False)
    image = np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    sid = engine.open(image)
    marks = [[60, 50, True], [100, 80, False], [70, 90, True]]
    for n, click in enumerate(marks):
        alpha = engine.predict(sid, {"clicks": [click]})
        for x, y, positive in marks[:n + 1]:
            assert (alpha[y, x] > 0.5) == positive
    alpha = engine.predict(sid, {"scribbles": [{"points": [[150, 150], [200, 160]], "positive": False, "width": 5}]})
    on_line = [alpha[int(150 + (x + 0.5 - 150) / 5), x] for x in range(152, 199)]
    assert max(on_line) < 0.5


def test_switch_from_env_and_load(weights, monkeypatch):
    monkeypatch.setenv("DFIMAT_KEEP_MARKS", "0")
    assert not Engine.load(device="cpu", weights=weights, runtime="torch").options.keep_marks
    monkeypatch.setenv("DFIMAT_KEEP_MARKS", "1")
    assert Engine.load(device="cpu", weights=weights, runtime="torch").options.keep_marks
    assert not Engine.load(device="cpu", weights=weights, runtime="torch", keep_marks=False).options.keep_marks


def test_the_engine_drops_unmarked_parts_unless_a_box_bounds_the_person(weights, monkeypatch):
    engine = Engine.load(device="cpu", weights=weights, runtime="torch", focus=False, text_grounding=False,
                         pose_prior=False, keep_marks=True)

    def two_people(image, lb, coarse, out=None, prior=None):
        alpha = np.zeros(image.shape[:2], np.float32)
        alpha[50:150, 40:120] = alpha[50:150, 250:330] = 0.9
        return alpha

    monkeypatch.setattr(engine, "_refine", two_people)
    image = np.random.default_rng(4).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    sid = engine.open(image)
    alpha = engine.predict(sid, {"clicks": [[80, 100, True]]})
    assert alpha[100, 80] > 0.5 and alpha[100, 290] == 0.0
    engine.reset(sid)
    alpha = engine.predict(sid, {"box": [30, 40, 340, 160], "clicks": [[80, 100, True]]})
    assert alpha[100, 290] > 0.5  # a box holds the person: two parts inside it may both be them
