"""Stroke masks → clicks and scribbles, on hand-made masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.serving.strokes import mask_to_prompts


def test_horizontal_stroke_becomes_one_scribble_with_its_width():
    mask = np.zeros((30, 80), np.uint8)
    mask[12:19, 10:70] = 255  # 7 px thick, 60 px long
    out = mask_to_prompts(mask)
    assert out.clicks == []
    assert len(out.scribbles) == 1
    s = out.scribbles[0]
    xs = [p[0] for p in s["points"]]
    ys = [p[1] for p in s["points"]]
    assert min(xs) <= 16 and max(xs) >= 63  # spans the stroke, ends shortened by at most ~half a width
    assert all(abs(y - 15) <= 1 for y in ys)
    assert 5 <= s["width"] <= 9
    assert s["positive"] is True
    assert len(s["points"]) <= 4  # a straight line simplifies to its ends


def test_round_dab_becomes_a_click_at_its_centre():
    mask = np.zeros((40, 40), np.uint8)
    cv2.circle(mask, (22, 17), 5, 255, -1)
    out = mask_to_prompts(mask, positive=False)
    assert out.scribbles == []
    assert len(out.clicks) == 1
    x, y, positive = out.clicks[0]
    assert abs(x - 22) <= 1 and abs(y - 17) <= 1 and positive is False


def test_offset_moves_points_into_image_coordinates():
    mask = np.zeros((20, 20), np.uint8)
    cv2.circle(mask, (10, 10), 4, 255, -1)
    out = mask_to_prompts(mask, x=100, y=50)
    x, y, _ = out.clicks[0]
    assert abs(x - 110) <= 1 and abs(y - 60) <= 1


def test_two_strokes_and_a_dab_give_two_scribbles_and_one_click():
    mask = np.zeros((100, 100), np.uint8)
    cv2.line(mask, (10, 10), (90, 10), 255, 5)
    cv2.line(mask, (10, 40), (80, 90), 255, 5)
    cv2.circle(mask, (80, 40), 4, 255, -1)
    out = mask_to_prompts(mask)
    assert len(out.scribbles) == 2
    assert len(out.clicks) == 1


def test_curved_stroke_follows_its_centre_line():
    mask = np.zeros((120, 120), np.uint8)
    cv2.ellipse(mask, (60, 60), (40, 40), 0, 0, 180, 255, 6)  # a half circle
    out = mask_to_prompts(mask)
    assert len(out.scribbles) == 1
    pts = np.array(out.scribbles[0]["points"])
    radius = np.hypot(pts[:, 0] - 60, pts[:, 1] - 60)
    assert np.all(np.abs(radius - 40) <= 3)
    assert len(pts) >= 5  # a curve keeps several vertices


def test_closed_ring_is_traced_as_a_scribble():
    mask = np.zeros((80, 80), np.uint8)
    cv2.circle(mask, (40, 40), 25, 255, 4)
    out = mask_to_prompts(mask)
    assert len(out.scribbles) >= 1
    pts = np.concatenate([np.array(s["points"]) for s in out.scribbles])
    assert np.all(np.abs(np.hypot(pts[:, 0] - 40, pts[:, 1] - 40) - 25) <= 3)


def test_points_are_clipped_into_the_image():
    mask = np.zeros((10, 60), np.uint8)
    mask[3:7, :] = 255
    out = mask_to_prompts(mask, x=-20, y=-5, image_size=(30, 30))
    for s in out.scribbles:
        for px, py in s["points"]:
            assert 0 <= px <= 29 and 0 <= py <= 29


def test_specks_and_empty_masks_give_nothing():
    mask = np.zeros((20, 20), np.uint8)
    assert mask_to_prompts(mask).clicks == [] and mask_to_prompts(mask).scribbles == []
    mask[5, 5] = 255
    out = mask_to_prompts(mask)
    assert out.clicks == [] and out.scribbles == []


def test_faint_alpha_below_threshold_is_ignored():
    mask = np.zeros((20, 40), np.uint8)
    mask[8:12, 5:35] = 60
    out = mask_to_prompts(mask)
    assert out.scribbles == [] and out.clicks == []


def test_rejects_non_2d_masks():
    with pytest.raises(ValueError):
        mask_to_prompts(np.zeros((4, 4, 3), np.uint8))
