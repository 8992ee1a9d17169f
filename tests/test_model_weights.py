"""The committed weights load and select the right person with one box on real multi-person photos.

Photos: the first Penn-Fudan images in ../shared/data (held out from training; pedestrians who stand close, so a box
around one person also covers parts of a neighbour). Per target we ask for the person with one tight box and score
the matte (alpha > 0.5) against every labelled person.

Threshold: IoU >= 0.65 with the boxed person for the median target, and for every target the matte must overlap
its own person more than any other (IoU with the target > IoU with each neighbour). On these four targets the person
fills only 31-48 % of its own box, so a model that returned the whole box scores <= 0.48 and one that picked the
neighbour scores ~0; 0.65 separates "selected the person" from "filled the box". Measured with the committed
weights (with their query selector, onnxruntime): 0.83, 0.88, 0.67, 0.61 (median 0.75; before the selector 0.82,
0.87, 0.67, 0.63), so the bound leaves room for numeric drift across CPUs.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from backend import data
from backend.runtime.engine import Engine, default_weights

torch.set_num_threads(1)
PENNFUDAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "pennfudan-sample"
MEDIAN_IOU = 0.65


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


@pytest.mark.skipif(not default_weights().is_file(), reason="committed weights missing")
@pytest.mark.skipif(not (PENNFUDAN / "manifest.json").is_file(), reason=f"needs the data set pennfudan-sample at {PENNFUDAN} (beside the clone; research use only, so not committed)")
def test_one_box_selects_the_right_person():
    engine = Engine.load(device="cpu")
    assert engine.model.selector is not None, "the committed weights carry the trained query selector"
    items = [it for it in data.load_set(PENNFUDAN).items][:3]
    scores = []
    for item in items:
        image = data.read_image(item.image_path)
        targets = data.person_targets(item)
        people = targets.people()
        sid = engine.open(image)
        for k, mask in enumerate(targets.masks):
            ys, xs = np.nonzero(mask)
            engine.reset(sid)
            alpha = engine.predict(sid, {"box": [float(xs.min()), float(ys.min()), float(xs.max() + 1),
                                                 float(ys.max() + 1)]})
            pred = alpha > 0.5
            own = _iou(pred, mask)
            others = [_iou(pred, p) for j, p in enumerate(people) if j != k]
            assert all(own > o for o in others), (item.id, k, own, others)
            scores.append(own)
        engine.close(sid)
    assert len(scores) >= 4
    assert float(np.median(scores)) >= MEDIAN_IOU, scores


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "two-people"
# Measured with the committed weights: 0.975 for either person (the bare box rectangle: 0.55). The fixture is easy
# (clean edges, a plain backdrop, people apart), so this only says the weights load and answer a box with its
# person, in every clone; the Penn-Fudan test above is the harder real-photo check where that set is present.
FIXTURE_IOU = 0.9


@pytest.mark.skipif(not default_weights().is_file(), reason="committed weights missing")
def test_one_box_selects_the_right_person_on_the_committed_fixture():
    engine = Engine.load(device="cpu")
    item = data.load_set(FIXTURE).items[0]
    image = data.read_image(item.image_path)
    people = data.person_targets(item).people()
    assert len(people) == 2
    sid = engine.open(image)
    for k, mask in enumerate(people):
        ys, xs = np.nonzero(mask)
        engine.reset(sid)
        pred = engine.predict(sid, {"box": [float(xs.min()), float(ys.min()), float(xs.max() + 1),
                                            float(ys.max() + 1)]}) > 0.5
        own, other = _iou(pred, mask), _iou(pred, people[1 - k])
        assert own >= FIXTURE_IOU and other < 0.01, (k, own, other)
    engine.close(sid)
