"""Engine plumbing with a tiny random checkpoint: sessions, encode-once, input conversion, errors, big images."""

import tracemalloc

import numpy as np
import pytest
import torch

from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompts import PromptError
from backend.runtime.engine import Engine, ImageError, SessionError, to_rgb_uint8

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")
    return Engine.load(device="cpu", weights=path)


def _image(h=70, w=90):
    return np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_open_predict_reset_close(engine):
    sid = engine.open(_image())
    alpha = engine.predict(sid, {"box": [10, 5, 60, 65]})
    assert alpha.shape == (70, 90) and alpha.dtype == np.float32
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    engine.predict(sid, {"clicks": [[20, 20, True], [70, 10, False]], "scribbles": [
        {"points": [[15, 30], [40, 50]], "positive": True, "width": 4}], "text": None})
    assert len(engine._sessions[sid].history) == 2 and engine._sessions[sid].prev is not None
    engine.reset(sid)
    assert len(engine._sessions[sid].history) == 0 and engine._sessions[sid].prev is None
    assert engine.session_nbytes(sid) > 70 * 90 * 3
    engine.close(sid)
    with pytest.raises(SessionError):
        engine.predict(sid, {"box": [1, 1, 5, 5]})


def test_image_is_encoded_once_per_session(engine, monkeypatch):
    calls = []
    original = engine.model.backbone.forward
    monkeypatch.setattr(engine.model.backbone, "forward", lambda x: calls.append(1) or original(x))
    sid = engine.open(_image())
    for k in range(3):
        engine.predict(sid, {"clicks": [[10 + k, 10, True]]})
    assert len(calls) == 1
    engine.open(_image())
    assert len(calls) == 2


def test_previous_prediction_changes_the_next_round(engine):
    sid = engine.open(_image())
    engine.predict(sid, {"box": [10, 5, 60, 65]})
    s = engine._sessions[sid]
    first = s.prev.copy()
    engine.predict(sid, {"clicks": [[30, 30, False]]})
    assert s.prev.shape == first.shape and not np.array_equal(s.prev, first)


@pytest.mark.parametrize("make", [
    lambda img: np.dstack([img, np.full(img.shape[:2], 200, np.uint8)]),  # RGBA
    lambda img: img[:, :, 0],  # grayscale
    lambda img: img[:, :, :1],  # H x W x 1
    lambda img: img.astype(np.uint16) * 257,  # 16-bit
])
def test_converted_inputs_are_accepted(engine, make):
    img = _image()
    sid = engine.open(make(img))
    assert engine.predict(sid, {"box": [0, 0, 90, 70]}).shape == (70, 90)


def test_conversion_values():
    img = _image(4, 5)
    assert np.array_equal(to_rgb_uint8(img.astype(np.uint16) * 257), img)
    gray = to_rgb_uint8(img[:, :, 1])
    assert gray.shape == (4, 5, 3) and np.array_equal(gray[:, :, 2], img[:, :, 1])


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 2), np.uint8),
                                 np.zeros((1, 10, 3), np.uint8), [[1, 2], [3, 4]], np.zeros((2, 3, 4, 5), np.uint8)])
def test_bad_images_raise_image_error(engine, bad):
    with pytest.raises(ImageError):
        engine.open(bad)


def test_prompt_errors_leave_the_session_untouched(engine):
    sid = engine.open(_image())
    engine.predict(sid, {"box": [10, 5, 60, 65]})
    before = engine._sessions[sid].prev.copy()
    for bad in ({}, {"box": None, "clicks": [], "scribbles": [], "text": None}, {"clicks": [[500, 5, True]]},
                {"box": [5, 5, 5, 9]}, {"text": "  "}):
        with pytest.raises(PromptError):
            engine.predict(sid, bad)
    assert len(engine._sessions[sid].history) == 1
    assert np.array_equal(engine._sessions[sid].prev, before)


def test_unknown_session_errors(engine):
    with pytest.raises(SessionError):
        engine.predict("nope", {"box": [0, 0, 1, 1]})
    with pytest.raises(KeyError):
        engine.reset("nope")
    with pytest.raises(SessionError):
        engine.close(None)


def test_device_choice_is_validated(tmp_path):
    path = build_tiny_checkpoint(tmp_path / "t.pt")
    with pytest.raises(ValueError):
        Engine.load(device="tpu", weights=path)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Engine.load(device="cuda", weights=path)
    with pytest.raises(FileNotFoundError):
        Engine.load(device="cpu", weights=tmp_path / "missing.pt")


def test_24_megapixel_image_refines_a_bounded_crop(engine, monkeypatch):
    h, w = 4000, 6000
    image = np.zeros((h, w, 3), np.uint8)
    image[1000:3000, 2000:3500] = 180
    seen = []
    original = engine.model.mrn.forward
    monkeypatch.setattr(engine.model.mrn, "forward", lambda x: seen.append(tuple(x.shape)) or original(x))
    g = engine.model.config.size // 4
    coarse = np.zeros((g, g), np.float32)
    # A person-sized blob in model space: image x 2000..3500, y 1000..3000 -> scale = size / 6000.
    s = g / w
    coarse[int(1000 * s):int(3000 * s), int(2000 * s):int(3500 * s)] = 1.0
    monkeypatch.setattr(engine, "_localise", lambda *a: coarse)
    tracemalloc.start()
    sid = engine.open(image)
    alpha = engine.predict(sid, {"box": [2000, 1000, 3500, 3000]})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert alpha.shape == (h, w)
    assert len(seen) == 1 and max(seen[0][2:]) <= engine.model.config.mrn_max_side
    assert alpha[:500].max() == 0.0  # outside the crop nothing is refined
    # The output (96 MB) plus the image copy (72 MB) dominate; no full-size intermediates beyond a few.
    assert peak < 450 * 2**20
