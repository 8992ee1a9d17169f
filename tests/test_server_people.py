"""Every person in an image: the mediapipe person finder and one matte per person (real tiny engine)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from backend.runtime.people import PoseDetector, matte_people
from dfimat_client import Client
from tests.test_server_fixtures import REPO, TOKEN, engine, rgb_image, running_server  # noqa: F401


def astronaut() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(REPO / "samples" / "astronaut.png")), cv2.COLOR_BGR2RGB)


def test_pose_detector_finds_each_person_once():
    img = astronaut()
    two = np.concatenate([img, img[:, ::-1]], axis=1)  # the astronaut and her mirror image side by side
    detector = PoseDetector()
    try:
        boxes = detector(two)
        assert len(boxes) == 2
        lefts = sorted(b[0] for b in boxes)
        assert lefts[0] < 100 and lefts[1] > 512  # one on each half
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= two.shape[1] and 0 <= y0 < y1 <= two.shape[0]
        assert detector(np.zeros((200, 300, 3), np.uint8)) == []
    finally:
        detector.close()


def test_matte_people_one_matte_per_box(engine):  # noqa: F811
    img = np.frombuffer(rgb_image(64, 48), np.uint8).reshape(48, 64, 3)
    boxes = [[1.0, 1.0, 30.0, 40.0], [32.0, 2.0, 60.0, 45.0]]
    hint = {"clicks": [[31, 20, True]]}  # clicks rather than text: keeps the text encoder out of this test
    out = matte_people(engine, img, hint, every_person=True, detector=lambda im: boxes)
    assert [b for b, _ in out] == boxes
    assert all(a.shape == (48, 64) for _, a in out)
    # Nobody found: the prompts alone give one matte; no prompts give none.
    assert len(matte_people(engine, img, hint, every_person=True, detector=lambda im: [])) == 1
    assert matte_people(engine, img, {}, every_person=True, detector=lambda im: []) == []
    single = matte_people(engine, img, {"box": boxes[0]})
    assert len(single) == 1 and single[0][0] == boxes[0]
    cancel = threading.Event()
    cancel.set()
    assert matte_people(engine, img, {}, every_person=True, detector=lambda im: boxes, cancel=cancel) == []


def test_batch_every_person_through_the_server(engine):  # noqa: F811
    boxes = [[1.0, 1.0, 30.0, 40.0], [32.0, 2.0, 60.0, 45.0], [5.0, 5.0, 20.0, 20.0]]
    with running_server(engine, people=lambda im: boxes) as srv, Client(srv.bound_endpoint, TOKEN, timeout=10) as c:
        img = rgb_image(64, 48)
        result = c.batch([{"pixels": img, "width": 64, "height": 48, "channels": 3, "prompts": {},
                           "every_person": True},
                          {"pixels": img, "width": 64, "height": 48, "channels": 3, "prompts": {"box": [0, 0, 9, 9]}},
                          {"pixels": img, "width": 64, "height": 48, "channels": 3,
                           "prompts": {"box": [0, 0, 900, 9]}}])
    first, second, bad = result.items
    assert [m["box"] for m in first["masks"]] == boxes and first["error"] is None
    assert len(second["masks"]) == 1 and all(len(m["alpha"]) == 64 * 48 for m in second["masks"])
    assert bad["masks"] == [] and bad["error"].code == "bad_prompt"


@pytest.mark.parametrize("prompts", [{"stroke_masks": []}, "text", {"clicks": [[99, 1, True]]}])
def test_a_batch_item_with_bad_prompts_fails_alone(engine, prompts):  # noqa: F811
    with running_server(engine) as srv, Client(srv.bound_endpoint, TOKEN, timeout=10) as c:
        img = rgb_image(8, 8)
        result = c.batch([{"pixels": img, "width": 8, "height": 8, "channels": 3, "prompts": prompts},
                          {"pixels": img, "width": 8, "height": 8, "channels": 3, "prompts": {"box": [0, 0, 5, 5]}}])
    assert result.items[0]["error"].code == "bad_prompt" and result.items[0]["masks"] == []
    assert result.items[1]["error"] is None and len(result.items[1]["masks"]) == 1
