from pathlib import Path

import numpy as np
import pytest

from backend.dfimat.prompts import PromptError
from backend.eval.baselines import BaselineSessionError, GrabCutBaseline, UnsupportedPrompt, load_baseline
from backend.eval.metrics import iou


def scene(h=240, w=320):
    """A saturated blob (the 'person') on a noisy grey background, and its mask."""
    rng = np.random.default_rng(0)
    image = rng.integers(90, 140, (h, w, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - 120) / 90.0) ** 2 + ((xx - 130) / 45.0) ** 2 <= 1
    image[mask] = (200, 40, 40)
    return image, mask


def test_grabcut_box_and_clicks():
    image, mask = scene()
    gc = GrabCutBaseline()
    sid = gc.open(image)
    alpha = gc.predict(sid, {"box": [80, 25, 180, 215]})
    assert alpha.shape == mask.shape and alpha.dtype == np.float32
    assert 0 <= alpha.min() and alpha.max() <= 1
    assert iou(alpha, mask) > 0.9
    gc.reset(sid)
    alpha = gc.predict(sid, {"clicks": [[130, 120, True], [300, 20, False]]})
    assert iou(alpha, mask) > 0.8
    alpha2 = gc.predict(sid, {"scribbles": [{"points": [[130, 60], [130, 180]], "positive": True, "width": 5}]})
    assert iou(alpha2, mask) > 0.8
    gc.close(sid)
    with pytest.raises(BaselineSessionError):
        gc.predict(sid, {"box": [1, 1, 10, 10]})


def test_grabcut_downscales_large_images():
    image, mask = scene(960, 1280)
    gc = GrabCutBaseline(work_side=320)
    sid = gc.open(image)
    x = np.flatnonzero(mask.any(0))
    y = np.flatnonzero(mask.any(1))
    alpha = gc.predict(sid, {"box": [int(x[0]) - 8, int(y[0]) - 8, int(x[-1]) + 8, int(y[-1]) + 8]})
    assert alpha.shape == mask.shape and iou(alpha, mask) > 0.85


def test_text_only_is_unsupported_and_session_unchanged():
    image, mask = scene()
    gc = GrabCutBaseline()
    sid = gc.open(np.dstack([image, np.full(mask.shape, 255, np.uint8)]))  # RGBA accepted
    with pytest.raises(UnsupportedPrompt):
        gc.predict(sid, {"text": "the person"})
    with pytest.raises(PromptError):
        gc.predict(sid, {"clicks": [[1000, 5, True]]})
    # Text beside a box is ignored, and the failed rounds above left no trace.
    alpha = gc.predict(sid, {"box": [80, 25, 180, 215], "text": "the person"})
    assert iou(alpha, mask) > 0.9


def test_bad_images_and_names():
    gc = GrabCutBaseline()
    with pytest.raises(ValueError, match="uint8"):
        gc.open(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        gc.open(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ValueError, match="unknown baseline"):
        load_baseline("sam")
    with pytest.raises(BaselineSessionError):
        gc.close("nope")


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pennfudan-sample"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"needs the data set pennfudan-sample at {DATA} (beside the clone; research use only, so not committed)")
def test_mediapipe_on_a_real_photo():
    pytest.importorskip("mediapipe")
    from backend.data import load_set, person_targets, read_image
    from backend.data.simulate import box_from_mask

    item = next(i for i in load_set(DATA).items if i.id == "PennPed00001")
    image = read_image(item.image_path)
    targets = person_targets(item)
    mp = load_baseline("mediapipe")
    sid = mp.open(image)
    target = targets.masks[0]
    b = box_from_mask(target)
    alpha = mp.predict(sid, {"box": b.as_list()})
    assert alpha.shape == target.shape and iou(alpha, target) > 0.8
    mp.reset(sid)
    rows, cols = np.nonzero(target)
    k = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    alpha = mp.predict(sid, {"clicks": [[float(cols[k]) + 0.5, float(rows[k]) + 0.5, True]]})
    assert alpha[rows[k], cols[k]] > 0.5 and iou(alpha, target) > 0.5
    with pytest.raises(UnsupportedPrompt):
        mp.predict(mp.open(image), {"text": "the leftmost person"})
    mp.shutdown()
