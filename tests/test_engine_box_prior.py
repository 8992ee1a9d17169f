"""The engine's box support (a box bounds the matte) and first-round pose prior (mediapipe's mask joins the coarse
mask): the rules, and that the engine applies them to what it returns and keeps. Plumbing with the tiny random
checkpoint; the accuracy effect of both is measured in docs/experiments.md ("Boxes", "Pose prior")."""

import cv2
import numpy as np
import pytest
import torch

from backend.dfimat.encoder import Letterbox
from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompts import Box, Click, PromptHistory, RoundPrompts, Scribble
from backend.runtime.engine import BOX_SUPPORT_MARGIN, Engine, box_support
from backend.runtime.focus import region_box
from backend.runtime.options import EngineOptions
from backend.runtime.pose_prior import (
    BOX_AVERAGE_PADDINGS,
    BOX_PADDING,
    MARKS_AVERAGE_CROPS,
    PRIOR_WEIGHT,
    box_rect,
    click_rects,
    mix_prior,
    padded_rect,
    pose_mask,
    prior_on_rect,
    with_centred,
)

torch.set_num_threads(1)
H, W = 400, 600


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


def _engine(weights, **kw) -> Engine:
    return Engine.load(device="cpu", weights=weights, runtime="torch", focus=False, text_grounding=False, **kw)


def _image():
    return np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _history(**round_kw) -> PromptHistory:
    h = PromptHistory()
    h.add(RoundPrompts(**round_kw))
    return h


# -- box support ----------------------------------------------------------------------------------------------------
def test_box_support_is_the_box_plus_its_margin_inside_the_image():
    assert box_support(_history(clicks=(Click(10, 10),)), W, H) is None
    rect = box_support(_history(box=Box(100.0, 100.0, 300.0, 200.0)), W, H)
    m = BOX_SUPPORT_MARGIN
    assert rect == (int(100 - 200 * m), int(100 - 100 * m), int(300 + 200 * m), int(200 + 100 * m))
    assert box_support(_history(box=Box(0.0, 0.0, 600.0, 400.0)), W, H) == (0, 0, W, H)


def test_a_positive_mark_beyond_the_box_lifts_the_support():
    box = Box(100.0, 100.0, 300.0, 200.0)
    assert box_support(_history(box=box, clicks=(Click(450, 150, False),)), W, H) is not None
    assert box_support(_history(box=box, clicks=(Click(450, 150, True),)), W, H) is None
    # A stroke counts with its brush: its centre line inside, its edge beyond.
    inside = Scribble(((150.0, 150.0), (305.0, 150.0)), True, 4.0)
    wide = Scribble(((150.0, 150.0), (305.0, 150.0)), True, 20.0)
    assert box_support(_history(box=box, scribbles=(inside,)), W, H) is not None
    assert box_support(_history(box=box, scribbles=(wide,)), W, H) is None


def test_engine_cuts_the_matte_and_the_kept_prediction_to_the_box(weights, monkeypatch):
    engine = _engine(weights, pose_prior=False)
    monkeypatch.setattr(engine, "_refine",
                        lambda image, lb, coarse, out=None, prior=None: np.ones(image.shape[:2], np.float32))
    monkeypatch.setattr(engine, "_localise", lambda s, h, n, view=None: np.ones((96, 96), np.float32))
    sid = engine.open(_image())
    alpha = engine.predict(sid, {"box": [100.0, 100.0, 300.0, 200.0]})
    x0, y0, x1, y1 = box_support(engine._sessions[sid].history, W, H)
    assert alpha[y0:y1, x0:x1].min() == 1.0
    assert alpha.sum() == (x1 - x0) * (y1 - y0)
    prev = engine._sessions[sid].prev  # 600 px -> 384 square: 0.64 model px per image px, 4 model px per cell
    assert prev[0, 0] == 0.0 and prev[int(150 * 0.64 / 4), int(200 * 0.64 / 4)] == 1.0
    assert prev[:, int(340 * 0.64 / 4):].max() == 0.0
    # The user clicks the person beyond the box: nothing is cut any more.
    alpha = engine.predict(sid, {"clicks": [[450.0, 150.0, True]]})
    assert alpha.min() == 1.0


# -- pose prior ----------------------------------------------------------------------------------------------------
def test_mix_prior_adds_log_odds_where_the_prior_lands():
    lb = Letterbox(H, W, 384)
    grid = np.full((96, 96), 0.5, np.float32)
    mask = np.zeros((H, W), np.float32)
    mask[100:200, 300:400] = 0.99
    mixed = mix_prior(grid, (mask, 1.0), lb)
    cy, cx = int(150 * 0.64 / 4), int(350 * 0.64 / 4)
    assert mixed[cy, cx] == pytest.approx(1 / (1 + np.exp(-PRIOR_WEIGHT * np.log(99))), abs=1e-4)
    assert mixed[5, 5] == pytest.approx(1 / (1 + np.exp(PRIOR_WEIGHT * np.log(99))), abs=1e-4)
    # Where both are sure, the answer stays sure; a downscaled prior (f) lands on the same cells.
    sure = mix_prior(np.full((96, 96), 0.99, np.float32), (mask, 1.0), lb)
    assert sure[cy, cx] > 0.99
    half = mix_prior(grid, (mask[::2, ::2].copy(), 0.5), lb)
    assert half[cy, cx] == pytest.approx(mixed[cy, cx], abs=1e-3)
    # A focus region's grid samples the prior in the region's own coordinates.
    rb = region_box((250, 50, 450, 250), 384)
    in_region = mix_prior(grid, (mask, 1.0), rb)
    assert in_region[48, 48] > 0.8 and in_region[2, 2] < 0.2


def test_prior_on_rect_samples_the_photo_rectangle_from_the_downscaled_mask():
    mask = np.zeros((H // 2, W // 2), np.float32)  # the prior of the photo downscaled by f = 0.5
    mask[50:100, 150:200] = 0.99  # photo pixels x 300-400, y 100-200
    out = prior_on_rect((mask, 0.5), (250, 50, 450, 250), (100, 100))  # 2 photo px per output px
    assert out.shape == (100, 100)
    assert out[50, 50] == pytest.approx(0.99) and out[5, 5] == 0.0
    assert out[:, :23].max() == 0.0 and out[26:73, 27:73].min() == pytest.approx(0.99)
    beyond = prior_on_rect((mask, 0.5), (500, 300, 700, 500), (50, 50))  # partly outside the photo
    assert beyond.max() == 0.0


def test_the_mrn_joins_the_prior_at_its_crop(weights, monkeypatch):
    engine = _engine(weights, options=EngineOptions(release_prior=False))
    engine._pose = lambda image, rect: np.pad(np.full((100, 100), 0.9, np.float32),
                                              ((100, image.shape[0] - 200), (150, image.shape[1] - 250)))
    seen = []
    refine = engine._refine
    monkeypatch.setattr(engine, "_refine", lambda *a, **kw: seen.append(kw.get("prior")) or refine(*a, **kw))
    sid = engine.open(_image())
    engine.predict(sid, {"clicks": [[200.0, 150.0, True]]})
    first = seen[-1]
    assert first is not None and first.offset == (0, 0)
    # The MRN gets the ISCN's own grid; the kept prediction (for the CRM) is the grid joined with the prior.
    assert not np.allclose(first.own, engine._sessions[sid].prev)
    engine.predict(sid, {"clicks": [[200.0, 150.0, False]]})  # contradicts the prior (see the next test)
    assert seen[-1] is None


def test_pose_prior_joins_only_first_rounds_with_a_box_or_positive_marks(weights, monkeypatch):
    engine = _engine(weights)
    calls = []

    def fake_pose(image, rect):
        calls.append(rect)
        out = np.zeros(image.shape[:2], np.float32)
        out[rect[1]:rect[3], rect[0]:rect[2]] = 0.9
        return out

    engine._pose = fake_pose
    sid = engine.open(_image())
    engine.predict(sid, {"box": [100.0, 100.0, 300.0, 200.0]})
    assert calls and calls[0] == box_rect(Box(100.0, 100.0, 300.0, 200.0), W, H)
    # The engine's box prior is the three-crop mean (the fake finds a person in each crop).
    assert calls[1:3] == [padded_rect(Box(100.0, 100.0, 300.0, 200.0), p, W, H) for p in BOX_AVERAGE_PADDINGS]
    n = len(calls)
    engine.predict(sid, {"clicks": [[200.0, 150.0, True]]})  # round 2: the prior has had its say
    assert len(calls) == n
    engine.reset(sid)
    engine.predict(sid, {"clicks": [[200.0, 150.0, False]]})  # only a negative mark: nothing to place a crop by
    assert len(calls) == n
    engine.reset(sid)
    engine.predict(sid, {"text": "the person on the left"})
    assert len(calls) == n
    engine.reset(sid)
    engine.predict(sid, {"clicks": [[200.0, 150.0, True]]})
    assert calls[n] in click_rects(200.0, 150.0, W, H)


def test_a_box_alone_gets_the_mean_of_three_crops_and_marks_keep_one():
    box = Box(100.0, 100.0, 300.0, 300.0)
    calls = []

    def fake_pose(rect):  # "finds" the person as the crop's inner half, so each crop gives another outline
        calls.append(rect)
        out = np.zeros((H, W), np.float32)
        x0, y0, x1, y1 = rect
        dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
        out[y0 + dy:y1 - dy, x0 + dx:x1 - dx] = 1.0
        return out

    rects = [padded_rect(box, p, W, H) for p in (BOX_PADDING, *BOX_AVERAGE_PADDINGS)]
    mask = pose_mask(RoundPrompts(box=box), W, H, fake_pose, BOX_AVERAGE_PADDINGS)
    assert calls == rects and len(set(rects)) == 3
    assert np.allclose(mask, np.mean([fake_pose(r) for r in rects], axis=0))
    assert np.isclose(mask.max(), 1.0) and np.isclose(mask[mask > 0].min(), 1 / 3)
    calls.clear()
    pose_mask(RoundPrompts(box=box), W, H, fake_pose)  # the MediaPipe baseline's recipe: its one crop
    assert calls == rects[:1]
    calls.clear()
    pose_mask(RoundPrompts(box=box, clicks=(Click(200, 200),)), W, H, fake_pose, BOX_AVERAGE_PADDINGS)
    assert calls == rects[:1]  # a mark picks its crop by agreement; nothing is averaged
    calls.clear()
    nobody = pose_mask(RoundPrompts(box=box), W, H, lambda r: calls.append(r) or np.zeros((H, W), np.float32),
                       BOX_AVERAGE_PADDINGS)
    assert calls == rects[:1] and not nobody.any()  # no person in the box's crop: no more crops asked


def test_marks_alone_get_the_mean_of_the_first_crops_that_agree_with_every_mark():
    calls = []

    def fake_pose(rect):  # the crop's whole rectangle: it holds the click, and a crop reaching x >= 300 the negative one
        calls.append(rect)
        out = np.zeros((H, W), np.float32)
        out[rect[1]:rect[3], rect[0]:rect[2]] = 1.0
        return out

    rects = click_rects(200.0, 200.0, W, H)
    prompts = RoundPrompts(clicks=(Click(200, 200), Click(320, 200, False)))
    agree = [r for r in rects if r[2] <= 320]  # crops that leave the negative click out
    assert len(agree) >= MARKS_AVERAGE_CROPS and agree[0] != rects[0]
    mask = pose_mask(prompts, W, H, fake_pose, BOX_AVERAGE_PADDINGS, MARKS_AVERAGE_CROPS)
    last = rects.index(agree[MARKS_AVERAGE_CROPS - 1])
    assert calls == rects[:last + 1]  # stops once enough crops agree
    assert np.allclose(mask, np.mean([fake_pose(r) for r in agree[:MARKS_AVERAGE_CROPS]], axis=0))
    calls.clear()
    first = pose_mask(prompts, W, H, fake_pose)  # one crop: the first that agrees, as the MediaPipe baseline
    assert np.array_equal(first, fake_pose(agree[0]))

def _pose_is_one_person(engine, monkeypatch):
    """Make the pose model see one person (a 300 x 200 block, 0.9) in every crop, and record the prior each MRN call
    gets; returns (the person's mask, the list of priors)."""
    person = np.zeros((H, W), np.float32)
    person[50:350, 50:250] = 0.9
    engine._pose = lambda image, rect: person.copy()
    seen = []
    refine = engine._refine
    monkeypatch.setattr(engine, "_refine", lambda *a, **kw: seen.append(kw.get("prior")) or refine(*a, **kw))
    return person, seen


def test_without_release_a_contradicting_mark_drops_the_prior(weights, monkeypatch):
    engine = _engine(weights, options=EngineOptions(release_prior=False, local_corrections="off"))
    # Local corrections off: the session also keeps the last matte from the third round on, and the size counted
    # below is the kept prior alone.
    person, seen = _pose_is_one_person(engine, monkeypatch)
    sid = engine.open(_image())
    engine.predict(sid, {"clicks": [[150.0, 200.0, True]]})
    first = seen[-1].prior
    engine.predict(sid, {"clicks": [[100.0, 300.0, True], [400.0, 100.0, False]]})  # agrees with the prior
    assert seen[-1] is not None and seen[-1].prior is first
    kept_bytes = engine.session_nbytes(sid)
    engine.predict(sid, {"clicks": [[200.0, 100.0, False]]})  # a negative mark on the prior's person
    assert seen[-1] is None
    assert kept_bytes - engine.session_nbytes(sid) == person.nbytes  # the session's size counted the kept prior
    engine.predict(sid, {"clicks": [[150.0, 250.0, True]]})  # dropped for good
    assert seen[-1] is None
    engine.reset(sid)
    assert engine._sessions[sid].kept_prior is None
    engine.predict(sid, {"scribbles": [{"points": [[420.0, 100.0], [450.0, 200.0]], "positive": True, "width": 5}]})
    assert seen[-1] is None  # a first round the prior does not cover: nothing to keep either
    engine.predict(sid, {"clicks": [[150.0, 200.0, True]]})
    assert seen[-1] is None


def test_a_pose_mask_that_misses_every_positive_mark_is_dropped(weights):
    engine = _engine(weights)
    person = np.zeros((H, W), np.float32)
    person[50:350, 50:250] = 0.9  # a large person at the left, whoever the crop was placed for
    engine._pose = lambda image, rect: person.copy()
    sid = engine.open(_image())
    s = engine._sessions[sid]
    assert engine._pose_prior(s, _history(clicks=(Click(150, 200),))) is not None
    assert engine._pose_prior(s, _history(clicks=(Click(450, 100),))) is None  # clicked someone else
    assert engine._pose_prior(s, _history(clicks=(Click(450, 100), Click(150, 200)))) is not None
    stroke = Scribble(((400.0, 100.0), (150.0, 200.0)), True, 5.0)  # ends on the person
    assert engine._pose_prior(s, _history(scribbles=(stroke,))) is not None
    # A box alone has no marks to check against.
    assert engine._pose_prior(s, _history(box=Box(300.0, 50.0, 550.0, 350.0))) is not None


def test_pose_prior_joins_every_text_round_answered_through_a_found_person(weights, monkeypatch):
    engine = _engine(weights)
    calls = []
    engine._pose = lambda image, rect: calls.append(rect) or np.zeros(image.shape[:2], np.float32)
    found = [100.0, 100.0, 300.0, 200.0]
    monkeypatch.setattr(engine, "_grounded_box", lambda s, history: found)
    sid = engine.open(_image())
    engine.predict(sid, {"text": "the person on the left"})
    engine.predict(sid, {"text": "no, the person on the right"})
    assert calls == [box_rect(Box(*found), W, H)] * 2
    # The found box prompts the networks only: the session keeps the text, and nothing is cut to that box.
    assert engine._sessions[sid].history.box is None


@pytest.mark.parametrize("average", [True, False])
def test_a_grounded_rounds_prior_averages_three_crops_or_takes_the_boxs_own(weights, monkeypatch, average):
    engine = _engine(weights, options=EngineOptions(grounded_prior_average=average))
    calls = []
    person = np.zeros((H, W), np.float32)
    person[100:200, 100:300] = 1.0
    engine._pose = lambda image, rect: calls.append(rect) or person.copy()
    found = Box(100.0, 100.0, 300.0, 200.0)
    monkeypatch.setattr(engine, "_grounded_box",
                        lambda s, history: found.as_list() if history.text is not None else None)
    engine.predict(engine.open(_image()), {"text": "the person on the left"})
    own = box_rect(found, W, H)
    padded = [padded_rect(found, pad, W, H) for pad in BOX_AVERAGE_PADDINGS]
    assert calls == ([own, *padded] if average else [own])
    # A drawn box averages its crops either way.
    calls.clear()
    engine.predict(engine.open(_image()), {"box": found.as_list()})
    assert calls == [own, *padded]


def test_a_failing_or_missing_pose_model_costs_nothing_but_the_prior(weights, monkeypatch):
    engine = _engine(weights)
    sid = engine.open(_image())

    def broken(image, rect):
        raise RuntimeError("native crash")

    engine._pose = broken
    without = _engine(weights, pose_prior=False)
    sid2 = without.open(_image())
    prompts = {"box": [100.0, 100.0, 300.0, 200.0]}
    np.testing.assert_array_equal(engine.predict(sid, prompts), without.predict(sid2, prompts))
    assert len(engine._sessions[sid].history) == 1

    engine = _engine(weights)

    def no_mediapipe():
        raise RuntimeError("the pose prior needs mediapipe 0.10.21 in the backend environment")

    monkeypatch.setattr("backend.runtime.people.pose_detector", no_mediapipe)
    sid = engine.open(_image())
    engine.predict(sid, prompts)
    assert engine.options.pose_prior is False


def test_the_prior_shares_the_people_finders_graph(weights):
    from backend.runtime.people import pose_detector

    engine = _engine(weights)
    sid = engine.open(_image())
    engine.predict(sid, {"box": [100.0, 100.0, 300.0, 200.0]})
    assert engine._pose is not None and engine._pose._pose is pose_detector()._pose


def test_crop_geometry_stays_in_the_image():
    assert box_rect(Box(0.0, 0.0, 10.0, 10.0), W, H) is None  # too small for the pose model
    x0, y0, x1, y1 = box_rect(Box(100.0, 100.0, 300.0, 200.0), W, H)
    assert (x0, y0, x1, y1) == (70, 85, 330, 215)
    for r in click_rects(5.0, 395.0, W, H):
        assert 0 <= r[0] < r[2] <= W and 0 <= r[1] < r[3] <= H


def test_a_loose_box_places_the_prior_by_the_box_the_second_pass_shrank_it_to(weights, monkeypatch):
    engine = _engine(weights)
    calls = []

    def fake_pose(image, rect):
        calls.append(rect)
        return np.zeros(image.shape[:2], np.float32)

    def person_in_the_middle(s, history, new, view=None):  # the ISCN answers well inside the user's box
        grid = np.zeros((96, 96), np.float32)
        grid[40:60, 30:50] = 0.9  # 4 model px per cell, 0.64 model px per image px: x 188-312, y 250-375
        return grid

    engine._pose = fake_pose
    monkeypatch.setattr(engine, "_localise", person_in_the_middle)
    sid = engine.open(_image())
    loose = Box(100.0, 150.0, 450.0, 399.0)
    engine.predict(sid, {"box": loose.as_list()})
    assert calls, "the prior ran"
    x0, y0, x1, y1 = calls[0]
    ux0, uy0, ux1, uy1 = box_rect(loose, W, H)
    assert x0 > ux0 and x1 < ux1 and y0 > uy0  # the crop sits around the shrunk box, not the user's
    assert engine._sessions[sid].history.box == loose  # the session keeps what the user drew


def test_a_contradicting_mark_releases_the_prior_only_where_it_points(weights, monkeypatch):
    engine = _engine(weights)  # release_prior is on by default
    person, seen = _pose_is_one_person(engine, monkeypatch)
    sid = engine.open(_image())
    engine.predict(sid, {"clicks": [[150.0, 200.0, True]]})
    first = seen[-1].prior[0]
    engine.predict(sid, {"clicks": [[200.0, 100.0, False]]})  # a negative mark on the prior's person
    assert "kept_prior" in engine.rules(sid)[-1]
    released = engine._sessions[sid].kept_prior[0]
    assert released[100, 200] == 0.5  # no opinion where the user pointed: the ISCN decides there
    changed = released != first
    assert changed.any() and changed.mean() < 0.5  # ... and only in the region the mark lies in
    assert np.array_equal(released[~changed], first[~changed])


def test_prior_check_leaves_out_a_prior_that_is_someone_else(weights, monkeypatch):
    # The pose model sees a person left of the box (the one in front of the target, say); the networks' own answer
    # fills the box. With the check on, that prior is left out; a prior on the box itself is kept.
    def run(options: EngineOptions, pose_cols: tuple[int, int]) -> tuple[str, ...]:
        engine = _engine(weights, options=options)
        person = np.zeros((H, W), np.float32)
        person[100:200, pose_cols[0]:pose_cols[1]] = 0.9
        engine._pose = lambda image, rect: person.copy()
        boxed = np.zeros((H, W), np.float32)
        boxed[100:200, 300:400] = 1.0
        size = engine.model.config.size
        own = cv2.resize(Letterbox(H, W, size).image_to_square(boxed), (size // 4, size // 4),
                         interpolation=cv2.INTER_NEAREST)
        monkeypatch.setattr(engine, "_localise", lambda s, h, n, view=None: own.copy())
        sid = engine.open(_image())
        engine.predict(sid, {"box": [300.0, 100.0, 400.0, 200.0]})
        return engine.rules(sid)[-1]

    elsewhere, on_box = (150, 250), (300, 400)
    assert "prior_skipped" in run(EngineOptions(), elsewhere)  # on by default, at 0.5
    assert "pose_prior" in run(EngineOptions(), on_box)
    assert "pose_prior" in run(EngineOptions(prior_check=0.0), elsewhere)  # 0: the prior always joins


def test_prior_check_reads_a_number_from_the_environment():
    assert EngineOptions.from_env({"DFIMAT_PRIOR_CHECK": "0.5"}).prior_check == 0.5
    assert EngineOptions.from_env({}).prior_check == 0.5
    assert EngineOptions.from_env({"DFIMAT_PRIOR_CHECK": "0"}).prior_check == 0.0
    with pytest.raises(ValueError, match="DFIMAT_PRIOR_CHECK must be a number"):
        EngineOptions.from_env({"DFIMAT_PRIOR_CHECK": "half"})


def test_with_centred_is_the_mean_or_blazepose_alone_where_mediapipe_finds_nobody():
    mediapipe, centred = np.zeros((4, 4), np.float32), np.full((4, 4), 0.8, np.float32)
    assert np.array_equal(with_centred(mediapipe, centred), centred)
    mediapipe[1:3, 1:3] = 1.0
    assert np.allclose(with_centred(mediapipe, centred), 0.5 * (mediapipe + centred))


@pytest.mark.parametrize("blend", [False, True])
def test_box_prior_blend_asks_blazepose_for_the_boxed_person_only_when_on(weights, monkeypatch, blend):
    engine = _engine(weights)
    engine.options = engine.options.with_overrides(box_prior_blend=blend, box_prior_fallback=False)
    engine._pose = lambda image, rect: np.full(image.shape[:2], 0.9, np.float32)
    asked = []

    def centred(image, box):
        asked.append(box.as_list())
        return np.zeros(image.shape[:2], np.float32)

    monkeypatch.setattr(engine, "_centred_person", centred)
    sid = engine.open(_image())
    engine.predict(sid, {"box": [100.0, 100.0, 300.0, 200.0]})
    assert len(asked) == int(blend)
    engine.predict(sid, {"clicks": [[200.0, 150.0, True]]})  # later rounds have no prior of their own
    assert len(asked) == int(blend)
