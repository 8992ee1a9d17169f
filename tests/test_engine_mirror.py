"""The mirror pass: the ISCN also answers on the photo flipped left-right and the two probabilities are averaged.
Geometry and plumbing with the tiny random checkpoint; its accuracy effect is measured in MODEL_CARD.md."""

import cv2
import numpy as np
import pytest
import torch

from backend.dfimat.encoder import Letterbox
from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompts import Box, Click, PromptHistory, RoundPrompts, Scribble, mirrored_text
from backend.engine import Engine
from backend.focus import region_box

torch.set_num_threads(1)
H, W = 300, 517  # odd width: the letterbox content ends inside a grid cell


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


def _engine(weights, mirror: bool) -> Engine:
    return Engine.load(device="cpu", weights=weights, runtime="torch", focus=False, text_grounding=False,
                       pose_prior=False, mirror=mirror)


def _image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 2)


def test_mirrored_prompts_flip_x_and_keep_the_rest():
    r = RoundPrompts(clicks=(Click(10, 20, False),), scribbles=(Scribble(((1, 2), (30, 4)), True, 7.0),),
                     box=Box(5, 6, 50, 60), text=None)
    m = r.mirrored(100)
    assert m.clicks == (Click(90, 20, False),)
    assert m.scribbles == (Scribble(((99, 2), (70, 4)), True, 7.0),)
    assert m.box == Box(50, 6, 95, 60)  # x0 < x1 still: the corners swap sides
    assert m.mirrored(100) == r
    assert PromptHistory([r, r]).mirrored(100).rounds == [m, m]


def test_mirror_square_map_matches_letterboxing_the_flipped_image():
    lb = Letterbox(H, W, 384)
    img = _image()[..., 0].astype(np.float32)
    want = lb.image_to_square(np.ascontiguousarray(img[:, ::-1]), cv2.INTER_AREA)
    got = lb.mirror_square_map(lb.image_to_square(img, cv2.INTER_AREA))
    h, w = lb.inner
    np.testing.assert_allclose(got[:h, :w], want[:h, :w], atol=1e-3)
    assert not got[:, w:].any() and not got[h:].any()  # padding stays padding
    grid = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    cells = w * 96 // 384  # whole cells inside the content
    np.testing.assert_allclose(lb.mirror_square_map(lb.mirror_square_map(grid))[:, 1:cells - 1],
                               grid[:, 1:cells - 1], atol=1e-5)


def test_the_mirror_pass_makes_the_coarse_mask_flip_equivariant(weights):
    """With the mirror pass, asking about the flipped photo with flipped prompts gives the flipped answer: each
    answer averages the same two network runs. Without it the tiny random net is visibly not equivariant."""
    image = _image()
    flipped = np.ascontiguousarray(image[:, ::-1])
    prompts = {"box": [40, 30, 260, 280], "clicks": [[120, 150, True], [400, 100, False]]}
    mirrored = RoundPrompts.from_dict(prompts, W, H).mirrored(W).to_dict()
    lb = Letterbox(H, W, 384)
    h, w = lb.inner
    gaps = {}
    for mirror in (False, True):
        engine = _engine(weights, mirror)
        a, b = engine.open(image), engine.open(flipped)
        engine.predict(a, prompts)
        engine.predict(b, mirrored)
        pa, pb = engine._sessions[a].prev, engine._sessions[b].prev
        gaps[mirror] = float(np.abs(lb.mirror_square_map(pa) - pb)[:h // 4 - 1, 1:w // 4 - 1].max())
    assert gaps[True] < 1e-4
    assert gaps[False] > 1e-3


def test_the_mirror_pass_asks_about_the_other_side(weights, monkeypatch):
    engine = _engine(weights, True)
    asked: list[str] = []
    monkeypatch.setattr(engine, "_embed_text", lambda text: asked.append(text) or np.ones(384, np.float32) / 20)
    sid = engine.open(_image())
    engine.predict(sid, {"text": "the second person from the left", "clicks": [[100, 100, True]]})
    assert asked == ["the second person from the left", "the second person from the right"]


def test_mirrored_text_swaps_sides_only():
    assert mirrored_text("Leftmost man, left-hand side") == "Rightmost man, right-hand side"
    assert mirrored_text("the person on the right in bright red") == "the person on the left in bright red"
    assert mirrored_text("the tallest person at the front") == "the tallest person at the front"


def test_flipped_encodings_are_cached_counted_and_shared_by_forks(weights):
    engine = _engine(weights, True)
    sid = engine.open(_image())
    before = engine.session_nbytes(sid)
    engine.predict(sid, {"box": [40, 30, 260, 280]})
    feats = engine._sessions[sid].mirrored[None]
    assert engine.session_nbytes(sid) > before
    engine.predict(sid, {"clicks": [[100, 100, True]]})
    assert engine._sessions[sid].mirrored[None] is feats  # encoded once per session
    fork = engine.fork(sid)
    assert engine._sessions[fork].mirrored[None] is feats


def test_the_mirror_pass_on_a_focus_region_flips_about_the_region(weights):
    rb = region_box((100, 40, 300, 240), 384)
    engine = _engine(weights, True)
    engine.focus = True
    sid = engine.open(_image())
    s = engine._sessions[sid]
    feats = engine._mirrored_feats(s, rb.region, rb)
    x0, y0, x1, y1 = rb.region
    want = engine._encode(np.ascontiguousarray(_image()[y0:y1, x0:x1][:, ::-1]), rb)
    for k in want:
        torch.testing.assert_close(feats[k], want[k])
    # a click at the region's left edge lands at its right edge in the flipped view
    click = RoundPrompts(clicks=(Click(x0 + 1, 100, True),)).mirrored(2 * x0 + rb.width).clicks[0]
    assert click.x == pytest.approx(x1 - 1)


def test_switch_from_env_and_load(weights, monkeypatch):
    monkeypatch.setenv("DFIMAT_MIRROR", "0")
    assert not Engine.load(device="cpu", weights=weights, runtime="torch").mirror
    monkeypatch.setenv("DFIMAT_MIRROR", "1")
    assert Engine.load(device="cpu", weights=weights, runtime="torch").mirror
    assert not Engine.load(device="cpu", weights=weights, runtime="torch", mirror=False).mirror
