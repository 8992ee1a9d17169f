"""Focus pass: region geometry, prompt transforms into the crop, crop-encoding cache, and focus off == old engine.

Plumbing only, with the tiny random checkpoint (its masks are noise, so nothing here asserts accuracy; the accuracy
effect is measured in docs/experiments.md, "Focus pass and input size").
"""

import numpy as np
import pytest
import torch

from backend.dfimat.encoder import Letterbox
from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompt_tensors import KIND_BOX_TL, KIND_NEG_CLICK, KIND_POS_CLICK, build_prompt_tensors
from backend.dfimat.prompts import Box, Click, PromptHistory, RoundPrompts, Scribble
from backend.runtime.engine import Engine
from backend.runtime.focus import (
    FOCUS_CACHE,
    RegionBox,
    full_to_region_grid,
    held_region,
    region_box,
    select_region,
    stay_region,
    target_extent,
)
from backend.runtime.options import EngineOptions

torch.set_num_threads(1)
H, W = 400, 600
SMALL_BOX = [100.0, 120.0, 160.0, 220.0]  # a small person: region ~ 160 px of a 600 px photo


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


@pytest.fixture(scope="module")
def engine(weights):
    return Engine.load(device="cpu", weights=weights, runtime="torch", focus=True)


def _image(h=H, w=W):
    return np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _history(*rounds: RoundPrompts) -> PromptHistory:
    h = PromptHistory()
    for r in rounds:
        h.add(r)
    return h


# -- geometry ------------------------------------------------------------------------------------------------------
def test_region_box_round_trips_and_matches_letterbox_without_offset():
    rb = RegionBox(height=150, width=200, size=384, x0=120, y0=40)
    pts = np.array([[120.0, 40.0], [320.0, 190.0], [200.5, 77.25]], np.float32)
    model = rb.to_model(pts)
    assert np.allclose(model[0], [0, 0]) and np.allclose(model[1], [384, 288])
    assert np.allclose(rb.to_image(model), pts, atol=1e-4)
    assert rb.region == (120, 40, 320, 190)
    plain = Letterbox(150, 200, 384)
    assert np.allclose(RegionBox(150, 200, 384).to_model(pts), plain.to_model(pts))


def test_prompt_tensors_land_in_crop_coordinates():
    rb = region_box((100, 50, 300, 250), 128)  # 200 px square -> scale 0.64
    new = RoundPrompts(clicks=(Click(150, 100, True), Click(10, 10, False)), box=Box(120, 60, 220, 240))
    t = build_prompt_tensors(_history(new), new, rb)
    kinds = list(t.kinds)
    assert np.allclose(t.points[kinds.index(KIND_POS_CLICK)], [(150 - 100) * 0.64, (100 - 50) * 0.64])
    assert np.allclose(t.points[kinds.index(KIND_BOX_TL)], [20 * 0.64, 10 * 0.64])
    assert t.points[kinds.index(KIND_NEG_CLICK)][0] < 0  # outside the crop: the engine drops such points
    g = 128 // 4
    ys, xs = np.nonzero(t.dense[2])  # the box channel, on the crop's grid
    assert xs.min() == int(20 * 0.64 / 4) and ys.max() == int(np.ceil(190 * 0.64 / 4)) - 1 and xs.max() < g
    assert t.dense[1].sum() == 0  # the far negative click is clipped off the crop's maps


def test_full_grid_resampled_into_region_grid():
    lb = Letterbox(H, W, 128)  # scale 128 / 600
    g = 32
    prev = np.zeros((g, g), np.float32)
    # image x 150..300, y 75..225 -> grid (x * scale / 4)
    s = 128 / W / 4
    prev[int(75 * s):int(225 * s), int(150 * s):int(300 * s)] = 1.0
    rb = region_box((150, 75, 300, 225), 128)
    out = full_to_region_grid(prev, lb, rb)
    assert out.shape == (g, g)
    assert out[g // 2, g // 2] == pytest.approx(1.0)  # the region's centre is inside the blob
    assert out[:, :2].mean() > 0.3 and out.mean() > 0.7  # the blob fills the region


def test_target_extent_rules():
    lb = Letterbox(H, W, 128)
    coarse = np.zeros((32, 32), np.float32)
    coarse[0:32, 0:32] = 1.0  # a mask spilling over the whole photo
    boxed = _history(RoundPrompts(box=Box(*SMALL_BOX)), RoundPrompts(clicks=(Click(170, 230, True),
                                                                              Click(500, 10, False))))
    # With a box the coarse mask is ignored, positive marks count, negative ones do not.
    assert np.allclose(target_extent(boxed, coarse, lb), [100, 120, 170, 230])
    clicks = _history(RoundPrompts(clicks=(Click(30, 40, True),),
                                   scribbles=(Scribble(((50, 60), (80, 90)), True, 4.0),)))
    small = np.zeros((32, 32), np.float32)
    small[10:12, 10:12] = 1.0  # cells 10..11 -> image px 10 * 600 / 32 = 187.5 .. 225
    assert np.allclose(target_extent(clicks, small, lb), [30, 40, 225, 225])
    assert target_extent(_history(RoundPrompts(clicks=(Click(5, 5, False),))), np.zeros((32, 32)), lb) is None
    assert np.allclose(target_extent(clicks, None, lb), [30, 40, 80, 90])  # the marks alone, no coarse mask


def test_region_selection_rules():
    extent = np.array(SMALL_BOX)
    region = select_region(extent, H, W)
    assert region is not None
    x0, y0, x1, y1 = region
    assert x0 <= 100 and y0 <= 120 and x1 >= 160 and y1 >= 220  # contains the target
    assert 0 <= x0 and 0 <= y0 and x1 <= W and y1 <= H  # clipped to the photo
    assert abs((x1 - x0) - (y1 - y0)) <= 20  # square-ish: the letterbox uses the whole model square
    assert max(x1 - x0, y1 - y0) >= 100 * 1.6 - 1  # margin around the longer side
    assert select_region(extent + 2.0, H, W) == region  # small jitter: same (snapped) region, cache hit
    assert select_region(np.array([0.0, 0.0, 400.0, 300.0]), H, W) is None  # already big in the photo
    assert select_region(None, H, W) is None
    corner = select_region(np.array([560.0, 360.0, 600.0, 400.0]), H, W)  # at the corner: shifted inside
    assert corner is not None and corner[2] == W and corner[3] == H and corner[2] - corner[0] >= 60


def test_held_region_rules():
    previous = (80, 80, 240, 240)
    fresh = (96, 96, 224, 224)
    # The target moved a little and still fits with half the usual margin: the last round's region stays.
    assert held_region(previous, np.array([120.0, 120.0, 200.0, 200.0]), fresh) == previous
    # It pokes out of the margin on one side: a fresh region.
    assert held_region(previous, np.array([120.0, 120.0, 230.0, 200.0]), fresh) == fresh
    # It shrank so much that the held region would magnify far less than a fresh one (> 1.5x its side).
    tiny_fresh = (150, 150, 200, 200)
    assert held_region(previous, np.array([165.0, 165.0, 185.0, 185.0]), tiny_fresh) == tiny_fresh
    assert held_region(previous, None, fresh) == fresh


def test_stay_region_rules():
    previous = (80, 80, 240, 240)
    # The marks still fit the last region with half the usual margin: keep focusing there.
    assert stay_region(previous, np.array([120.0, 120.0, 200.0, 200.0])) == previous
    # A mark beyond it (the user points at a part outside): the whole-image answer, as without the switch.
    assert stay_region(previous, np.array([120.0, 120.0, 236.0, 200.0])) is None
    assert stay_region(previous, None) is None


def test_switch_from_env_and_load(weights, monkeypatch):
    monkeypatch.setenv("DFIMAT_FOCUS", "0")
    assert EngineOptions.from_env().focus is False
    assert Engine.load(device="cpu", weights=weights, runtime="torch").options.focus is False
    assert Engine.load(device="cpu", weights=weights, runtime="torch", focus=True).options.focus is True
    monkeypatch.setenv("DFIMAT_FOCUS", "1")
    assert Engine.load(device="cpu", weights=weights, runtime="torch").options.focus is True


# -- engine ------------------------------------------------------------------------------------------------------
def test_crop_encoding_is_cached_and_reused(engine, monkeypatch):
    calls = []
    original = engine.model.backbone.forward
    monkeypatch.setattr(engine.model.backbone, "forward", lambda x: calls.append(tuple(x.shape)) or original(x))
    sid = engine.open(_image())
    assert len(calls) == 1
    alpha = engine.predict(sid, {"box": SMALL_BOX})
    s = engine._sessions[sid]
    assert alpha.shape == (H, W) and len(calls) == 2 and len(s.crops) == 1
    region = next(iter(s.crops))
    assert s.focus_prev is not None and s.focus_prev[0] == region
    assert s.prev is not None and s.prev.shape == (32, 32)  # the whole-image prediction stays the session's
    x0, y0, x1, y1 = region
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert alpha[outside].max() == 0.0  # the matte is pasted back into the region only
    engine.predict(sid, {"clicks": [[130, 150, True], [20, 20, False]]})  # inside the box: same region
    assert len(calls) == 2
    engine.reset(sid)  # reset keeps the encodings, like the whole-image one
    engine.predict(sid, {"box": SMALL_BOX})
    assert len(calls) == 2
    for k in range(FOCUS_CACHE + 1):  # other targets: new regions, cache stays bounded
        engine.reset(sid)
        engine.predict(sid, {"box": [300.0 + 40 * k, 50.0, 340.0 + 40 * k, 110.0]})
    assert len(calls) == 2 + FOCUS_CACHE + 1 and len(s.crops) == FOCUS_CACHE
    assert engine.session_nbytes(sid) > _image().nbytes
    engine.close(sid)


def test_big_target_skips_the_focus_pass(engine, monkeypatch):
    calls = []
    original = engine.model.backbone.forward
    monkeypatch.setattr(engine.model.backbone, "forward", lambda x: calls.append(1) or original(x))
    sid = engine.open(_image())
    engine.predict(sid, {"box": [10.0, 10.0, 590.0, 390.0]})
    assert len(calls) == 1 and engine._sessions[sid].focus_prev is None


def test_focus_off_is_the_old_engine(weights):
    from backend.runtime.engine import _cut_to, box_support

    # Marks hold is off too: the reference below rebuilds the networks' path only (tests/test_marks.py covers it).
    off = Engine.load(device="cpu", weights=weights, runtime="torch", focus=False, pose_prior=False,
                      keep_marks=False)
    image = _image()
    sid = off.open(image)
    rounds = [{"box": SMALL_BOX}, {"clicks": [[130, 150, True], [150, 200, False]]}]
    got = [off.predict(sid, r) for r in rounds]
    s = off._sessions[sid]
    assert not s.crops and s.focus_prev is None
    # The pre-focus engine: whole-image ISCN then MRN on the whole image's letterbox, prev = that ISCN output, both
    # cut to the box's support (the box holds the person; the second round's positive click is inside it).
    ref = Engine.load(device="cpu", weights=weights, runtime="torch", focus=False, pose_prior=False)
    rid = ref.open(image)
    r = ref._sessions[rid]
    for prompts, alpha in zip(rounds, got, strict=True):
        new = RoundPrompts.from_dict(prompts, W, H)
        history = PromptHistory(list(r.history.rounds))
        history.add(new)
        coarse = ref._localise(r, history, new).copy()
        expected = ref._refine(r.image, r.letterbox, coarse)
        support = box_support(history, W, H)
        _cut_to(expected, support)
        _cut_to(coarse, ref._grid_rect(support, r.letterbox, coarse.shape[0]))
        assert np.array_equal(expected, alpha)
        r.history, r.prev = history, coarse
    assert np.array_equal(r.prev, s.prev)


@pytest.mark.parametrize("hold", [False, True])
def test_focus_hold_keeps_the_region_while_the_target_fits(weights, monkeypatch, hold):
    """The coarse mask's extent moves between rounds; with ``focus_hold`` the corrective round keeps the region it
    focused on (and its cached encoding, and the focused mask the CRM compares with), without it a fresh one."""
    import backend.runtime.engine as engine_module

    on = Engine.load(device="cpu", weights=weights, runtime="torch", focus=True, pose_prior=False,
                     options=EngineOptions(focus_hold=hold, pose_prior=False))
    extents = iter([np.array([130.0, 130.0, 190.0, 210.0]), np.array([136.0, 134.0, 196.0, 214.0])])
    monkeypatch.setattr(engine_module, "target_extent", lambda *a: next(extents))
    sid = on.open(_image())
    on.predict(sid, {"clicks": [[160, 170, True]]})  # round 1 without a box: whole image only
    on.predict(sid, {"clicks": [[165, 180, True]]})
    s = on._sessions[sid]
    first = s.focus_prev[0]
    assert select_region(np.array([136.0, 134.0, 196.0, 214.0]), H, W) != first  # a fresh region would move
    on.predict(sid, {"clicks": [[170, 190, True]]})
    assert (s.focus_prev[0] == first) is hold
    assert ("focus_hold" in on.rules(sid)[-1]) is hold
    assert len(s.crops) == (1 if hold else 2)


@pytest.mark.parametrize("stay", [False, True])
def test_focus_stay_keeps_focusing_when_only_the_coarse_mask_spread(weights, monkeypatch, stay):
    """A corrective round whose coarse mask covers most of the photo would fall back to the whole image; with
    ``focus_stay`` it keeps the last region (and its cached encoding) while the marks alone still fit it."""
    import backend.runtime.engine as engine_module

    on = Engine.load(device="cpu", weights=weights, runtime="torch", focus=True, pose_prior=False,
                     options=EngineOptions(focus_stay=stay, pose_prior=False))
    marks = np.array([150.0, 160.0, 175.0, 200.0])
    spread = {"wide": False}

    def extent(history, coarse, lb):
        # `stay_region` is given the extent of the marks alone (no coarse mask).
        return np.array([0.0, 0.0, W, H]) if spread["wide"] and coarse is not None else marks

    monkeypatch.setattr(engine_module, "target_extent", extent)
    sid = on.open(_image())
    on.predict(sid, {"clicks": [[160, 170, True]]})  # round 1 without a box: whole image only
    on.predict(sid, {"clicks": [[165, 190, True]]})
    s = on._sessions[sid]
    first = s.focus_prev[0]
    spread["wide"] = True
    alpha = on.predict(sid, {"clicks": [[170, 180, False]]})
    if stay:
        assert s.focus_prev[0] == first and "focus_stay" in on.rules(sid)[-1]
        x0, y0, x1, y1 = first
        outside = np.ones(alpha.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert not alpha[outside].any()  # the focused answer covers its region only
    else:
        assert s.focus_prev is None and "focus" not in on.rules(sid)[-1]
    assert len(s.crops) == 1


@pytest.mark.parametrize("after_box", [False, True])
def test_the_round_after_a_found_persons_box_keeps_its_region(weights, monkeypatch, after_box):
    """When the found person's box stops prompting the networks (`click_box` refused, or a weak box's one round),
    the region would move from that box to the marks and the coarse mask; with ``focus_after_box`` the round keeps
    the box's region while the marks fit it."""
    import backend.runtime.engine as engine_module

    on = Engine.load(device="cpu", weights=weights, runtime="torch", focus=True, pose_prior=False,
                     options=EngineOptions(focus_after_box=after_box, pose_prior=False))
    extents = iter([np.array([150.0, 160.0, 175.0, 200.0]), np.array([150.0, 160.0, 190.0, 215.0])])
    current = {"extent": next(extents)}
    monkeypatch.setattr(engine_module, "target_extent",
                        lambda history, coarse, lb: current["extent"] if coarse is not None else
                        np.array([160.0, 170.0, 165.0, 190.0]))
    sid = on.open(_image())
    on.predict(sid, {"clicks": [[160, 170, True]]})
    on.predict(sid, {"clicks": [[165, 190, True]]})
    s = on._sessions[sid]
    first = s.focus_prev[0]
    current["extent"] = next(extents)
    assert select_region(current["extent"], H, W) not in (None, first)  # a fresh region would move
    s.rules[-1] = ("click_box", *s.rules[-1])  # as if the last round had shown a found person's box
    on.predict(sid, {"clicks": [[162, 180, False]]})
    assert (s.focus_prev[0] == first) is after_box
    assert ("focus_stay" in on.rules(sid)[-1]) is after_box


def test_first_round_without_a_box_answers_from_the_whole_image(engine, monkeypatch):
    """Round 1 with marks only has nothing but the marks and a partial coarse mask to place a region by (held-out
    clicks IoU@1 0.464 with the focus pass there, 0.490 without): the focus pass starts with round 2, or with a box."""
    calls = []
    original = engine._focus
    monkeypatch.setattr(engine, "_focus", lambda *a: calls.append(len(a[1])) or original(*a))
    sid = engine.open(_image())
    engine.predict(sid, {"clicks": [[130, 160, True]]})
    engine.predict(sid, {"scribbles": [{"points": [[120, 150], [140, 170]], "positive": True, "width": 5}]})
    engine.reset(sid)
    engine.predict(sid, {"scribbles": [{"points": [[120, 150], [140, 170]], "positive": True, "width": 5}]})
    engine.reset(sid)
    engine.predict(sid, {"box": SMALL_BOX})
    assert calls == [2, 1]  # the second click round and the box round, not the mark-only first rounds


def test_focus_round_with_only_clicks_and_a_failure_leaves_session_untouched(engine):
    sid = engine.open(_image())
    engine.predict(sid, {"clicks": [[130, 160, True]]})
    s = engine._sessions[sid]
    before = (len(s.history), s.prev.copy(), s.focus_prev)
    with pytest.raises(ValueError):
        engine.predict(sid, {"clicks": [[10_000, 5, True]]})
    assert len(s.history) == before[0] and np.array_equal(s.prev, before[1]) and s.focus_prev is before[2]


def test_24_megapixel_focus_stays_bounded(engine, monkeypatch):
    import tracemalloc

    h, w = 4000, 6000
    image = np.zeros((h, w, 3), np.uint8)
    seen = []
    original = engine.model.mrn.forward
    monkeypatch.setattr(engine.model.mrn, "forward", lambda x: seen.append(tuple(x.shape)) or original(x))
    tracemalloc.start()
    sid = engine.open(image)
    alpha = engine.predict(sid, {"box": [2000, 1000, 2600, 2000]})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert alpha.shape == (h, w) and engine._sessions[sid].focus_prev is not None
    assert all(max(shape[2:]) <= engine.model.config.mrn_max_side for shape in seen)
    assert peak < 450 * 2**20  # output matte (96 MB) + image copy (72 MB); the region is a view, not a copy
    engine.close(sid)


# -- loose boxes --------------------------------------------------------------------------------------------------
def test_tightened_box_shrinks_only_a_loose_box():
    from backend.runtime.engine import tightened_box

    lb = Letterbox(H, W, 384)  # 600 px wide -> 0.64 model px per image px; grid cell = 4 model px = 6.25 image px
    coarse = np.zeros((96, 96), np.float32)
    coarse[20:40, 30:40] = 1.0  # image x 187.5-250, y 125-250
    loose = Box(100.0, 80.0, 400.0, 350.0)
    tight = tightened_box(loose, coarse, lb)
    assert tight is not None
    assert 180 < tight.x0 < 188 and 249 < tight.x1 < 256 and 120 < tight.y0 < 126 and 249 < tight.y1 < 256
    # Never outside the user's box, and a box the answer already fills is left alone.
    assert tightened_box(Box(190.0, 130.0, 245.0, 245.0), coarse, lb) is None
    clipped = tightened_box(Box(200.0, 80.0, 400.0, 350.0), coarse, lb)
    assert clipped is not None and clipped.x0 == 200.0
    assert tightened_box(loose, np.zeros((96, 96), np.float32), lb) is None


def test_a_loose_box_asks_twice_and_the_session_keeps_the_users_box(engine, monkeypatch):
    boxes = []
    original = engine._localise
    monkeypatch.setattr(engine, "_localise", lambda s, h, n, view=None: boxes.append(h.box) or original(s, h, n, view))
    monkeypatch.setattr("backend.runtime.engine.tightened_box", lambda box, coarse, lb: Box(120.0, 130.0, 150.0, 210.0))
    sid = engine.open(_image())
    engine.predict(sid, {"box": [20.0, 20.0, 400.0, 380.0]})
    whole = [b for b in boxes if b is not None][:2]
    assert whole[0].as_list() == [20.0, 20.0, 400.0, 380.0] and whole[1].as_list() == [120.0, 130.0, 150.0, 210.0]
    assert engine._sessions[sid].history.box.as_list() == [20.0, 20.0, 400.0, 380.0]
