"""People apart (issue #21) on the committed side-by-side fixture (two people touching along a long edge, exact
masks), with the committed DFIMat-S weights and person networks, and the take-out in click sessions switched on
(`EngineOptions.take_out_marks="all"`). That switch is off by default: on the validation composites it gained the
first click (+0.015) and lost the fifth (-0.005), which failed the rule written for it (docs/experiments.md, "People
networks"). These tests pin what it does where people touch.

Without it (the defaults), a click deep inside either person gives IoU 0.71 / 0.56 with 52 % / 55 % of the neighbour
inside the matte, and the simulated corrective clicks that follow go 0.97 -> 0.70 and 0.90 -> 0.60 (measured here).
With it: first click 0.89 / 0.97 with the neighbour <= 14 % inside, and no corrective round lower by more than 0.01.
The bounds sit between the two."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backend.data.simulate import next_clicks
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "side-by-side"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def photo():
    image = cv2.cvtColor(cv2.imread(str(FIXTURE / "images" / "side-by-side.png")), cv2.COLOR_BGR2RGB)
    labels = cv2.imread(str(FIXTURE / "instances" / "side-by-side.png"), cv2.IMREAD_UNCHANGED)
    return image, labels


@pytest.fixture(scope="module")
def engine():
    return Engine.load(device="cpu", options=EngineOptions().with_overrides(take_out_marks="all"))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _deep_inside(mask: np.ndarray) -> list[float]:
    """The pixel of ``mask`` farthest from its outline (where a user clicks to say "this person")."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [float(col), float(row), True]


@pytest.mark.parametrize("label", [1, 2])
def test_a_click_keeps_the_neighbour_out(engine, photo, label):
    image, labels = photo
    target, neighbour = labels == label, (labels > 0) & (labels != label)
    sid = engine.open(image)
    matte = engine.predict(sid, {"clicks": [_deep_inside(target)]}) > 0.5
    assert _iou(matte, target) >= 0.85
    assert (matte & neighbour).sum() / neighbour.sum() <= 0.2
    assert "take_out_others" in engine.rules(sid)[-1]


@pytest.mark.parametrize("label", [1, 2])
def test_corrective_clicks_do_not_make_the_matte_worse(engine, photo, label):
    image, labels = photo
    target = labels == label
    sid = engine.open(image)
    matte = engine.predict(sid, {"clicks": [_deep_inside(target)]}) > 0.5
    ious = [_iou(matte, target)]
    rng = np.random.default_rng(0)
    for _ in range(4):
        (click,) = next_clicks(target, matte, 1, rng)  # at the centre of the largest error, as the evaluation does
        matte = engine.predict(sid, {"clicks": [[click.x, click.y, click.positive]]}) > 0.5
        ious.append(_iou(matte, target))
    assert all(b >= a - 0.01 for a, b in zip(ious[:-1], ious[1:], strict=True)), ious


@pytest.fixture(scope="module")
def first_round_engine():
    return Engine.load(device="cpu", options=EngineOptions().with_overrides(take_out_marks="first", take_out_prev=True))


@pytest.mark.parametrize("label", [1, 2])
def test_a_first_round_take_out_the_networks_saw_keeps_the_neighbour_out(first_round_engine, photo, label):
    """take_out_marks="first" with take_out_prev: the take-out runs in the first round only, and the grid the
    networks compare the next round with is cut with the matte. Measured here: IoU 0.89 / 0.97 after the first click,
    the later rounds 0.93-0.97 with at most 5 % of the neighbour inside (the largest drop 0.03); without the cut the
    neighbour came back once the take-out stopped (0.97 -> 0.59 with 49 % of it inside). The bounds sit between."""
    engine = first_round_engine
    image, labels = photo
    target, neighbour = labels == label, (labels > 0) & (labels != label)
    sid = engine.open(image)
    matte = engine.predict(sid, {"clicks": [_deep_inside(target)]}) > 0.5
    ious = [_iou(matte, target)]
    assert "take_out_others" in engine.rules(sid)[-1]
    rng = np.random.default_rng(0)
    for _ in range(4):
        (click,) = next_clicks(target, matte, 1, rng)
        matte = engine.predict(sid, {"clicks": [[click.x, click.y, click.positive]]}) > 0.5
        ious.append(_iou(matte, target))
        assert "take_out_others" not in engine.rules(sid)[-1]
        assert (matte & neighbour).sum() / neighbour.sum() <= 0.15, ious
    assert ious[0] >= 0.85 and min(ious[1:]) >= 0.85, ious
    assert all(b >= a - 0.05 for a, b in zip(ious[:-1], ious[1:], strict=True)), ious
