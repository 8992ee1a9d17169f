"""Shapes of each network on odd image sizes, letterbox geometry and prompt tensors from hand-made prompts."""

import numpy as np
import pytest
import torch

from backend.dfimat.encoder import Letterbox
from backend.dfimat.iscn import best_mask
from backend.dfimat.model import DFIMatConfig, DFIMatS
from backend.dfimat.mrn import MRN
from backend.dfimat.prompt_tensors import (
    KIND_BOX_BR,
    KIND_BOX_CENTRE,
    KIND_BOX_TL,
    KIND_NEG_CLICK,
    KIND_POS_CLICK,
    KIND_POS_SCRIBBLE,
    MAX_POINTS,
    build_prompt_tensors,
    collate,
)
from backend.dfimat.prompts import Box, Click, PromptHistory, RoundPrompts, Scribble

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return DFIMatS(DFIMatConfig(size=128, dim=32, mask_dim=16, num_queries=3, num_memory=2, num_layers=2, heads=2,
                                mrn_width=8)).eval()


@pytest.mark.parametrize("hw", [(37, 121), (301, 77), (128, 128), (1, 5)])
def test_letterbox_round_trip_on_odd_sizes(hw):
    h, w = hw
    lb = Letterbox(h, w, 64)
    img = (np.arange(h * w, dtype=np.float32).reshape(h, w) % 7 > 3).astype(np.float32)
    square = lb.image_to_square(img, interpolation=0)
    assert square.shape == (64, 64)
    ih, iw = lb.inner
    assert max(ih, iw) == 64 and square[ih:].sum() == 0 and square[:, iw:].sum() == 0
    back = lb.square_to_image(square)
    assert back.shape == (h, w)
    xy = np.array([[w - 0.5, h - 0.5]])
    assert np.allclose(lb.to_image(lb.to_model(xy)), xy, atol=1e-4)


def test_square_to_crop_agrees_with_full_resampling():
    lb = Letterbox(90, 200, 64)
    square = np.zeros((16, 16), np.float32)
    square[2:6, 4:9] = 1.0
    full = lb.square_to_image(square)
    crop = (40, 10, 160, 70)
    part = lb.square_to_crop(square, crop, (60, 120))  # same resolution as the image crop
    assert part.shape == (60, 120)
    assert np.mean(np.abs(part - full[10:70, 40:160])) < 0.05


@pytest.mark.parametrize("hw", [(37, 121), (333, 211)])
def test_backbone_and_iscn_shapes(tiny, hw):
    h, w = hw
    size = tiny.config.size
    lb = Letterbox(h, w, size)
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    x = torch.from_numpy(lb.image_to_square(image)).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1)
    feats = tiny.backbone(x)
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "s4": (24, 32, 32), "s8": (40, 16, 16), "s16": (112, 8, 8), "s32": (320, 4, 4)}
    hist = PromptHistory()
    rnd = RoundPrompts(clicks=(Click(w / 2, h / 2, True),), box=Box(0, 0, w, h))
    hist.add(rnd)
    batch = collate([build_prompt_tensors(hist, rnd, lb), build_prompt_tensors(PromptHistory(), RoundPrompts(), lb)],
                    size)
    g = size // 4
    with torch.no_grad():
        masks, logits = tiny.iscn(feats, batch, torch.rand(2, 1, g, g), torch.tensor([True, False]))
    assert masks.shape == (2, 3, g, g) and logits.shape == (2, 3)
    assert torch.isfinite(masks).all() and torch.isfinite(logits).all()
    assert best_mask(masks, logits).shape == (2, g, g)


@pytest.mark.parametrize("hw", [(64, 96), (160, 32)])
def test_mrn_shapes_and_range(hw):
    torch.manual_seed(0)
    net = MRN(8).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 4, *hw))
    for key in ("alpha", "alpha_os4", "alpha_os1"):
        assert out[key].shape == (1, 1, *hw)
        assert float(out[key].min()) >= 0.0 and float(out[key].max()) <= 1.0


def test_mrn_rejects_sides_that_are_not_multiples_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        MRN(8)(torch.rand(1, 4, 100, 64))


def test_prompt_tensors_from_hand_made_prompts():
    lb = Letterbox(200, 400, 128)  # scale 0.32; dense grid 32 x 32
    first = RoundPrompts(clicks=(Click(100, 100, True),), box=Box(0, 0, 200, 200))
    second = RoundPrompts(clicks=(Click(300, 50, False),), scribbles=(Scribble([(10, 150), (190, 150)], True, 10),))
    hist = PromptHistory()
    hist.add(first)
    hist.add(second)
    t = build_prompt_tensors(hist, second, lb)
    kinds = list(t.kinds)
    assert kinds[:2] == [KIND_POS_CLICK, KIND_NEG_CLICK]
    assert kinds[-3:] == [KIND_BOX_TL, KIND_BOX_BR, KIND_BOX_CENTRE]
    assert set(kinds[2:-3]) == {KIND_POS_SCRIBBLE} and len(kinds[2:-3]) >= 2
    assert np.allclose(t.points[0], [32.0, 32.0]) and np.allclose(t.points[1], [96.0, 16.0])
    assert np.allclose(t.points[-1], [32.0, 32.0])  # box centre
    pos, neg, box, new_pos, new_neg = t.dense
    gx, gy = 32.0 / 4 - 0.5 + 0.5, 32.0 / 4 - 0.5 + 0.5
    assert pos[int(gy), int(gx)] == 1.0 and new_pos[int(gy), int(gx)] == 0.0  # round-1 click is not "new"
    assert neg[4, 24] == 1.0 and new_neg[4, 24] == 1.0  # (96, 16) model px -> grid (23.5, 3.5)
    assert new_pos[12, 8] == 1.0  # the new scribble runs along model y = 48 -> grid row ~11.5
    assert box[:16, :16].all() and box[:, 17:].sum() == 0 and box[17:].sum() == 0
    batch = collate([t], 128)
    assert batch["points"].max() <= 1.0 and batch["valid"].all() and not batch["has_text"].any()


def test_prompt_tensors_keep_the_newest_points_and_embed_text():
    lb = Letterbox(100, 100, 64)
    hist = PromptHistory()
    for i in range(MAX_POINTS + 5):
        hist.add(RoundPrompts(clicks=(Click(i % 100, 1, True),)))
    last = RoundPrompts(clicks=(Click(99, 99, False),), text="the person on the left")
    hist.add(last)
    t = build_prompt_tensors(hist, last, lb, embed_text=lambda s: np.full(384, len(s), np.float32))
    assert len(t.points) == MAX_POINTS and t.kinds[-1] == KIND_NEG_CLICK
    assert t.text_emb is not None and t.text_emb[0] == len("the person on the left")
    batch = collate([t, build_prompt_tensors(PromptHistory(), RoundPrompts(), lb)], 64)
    assert batch["points"].shape == (2, MAX_POINTS, 2)
    assert batch["has_text"].tolist() == [True, False]
    assert batch["valid"][1].sum() == 0
