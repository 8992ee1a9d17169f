"""The people finder (backend.runtime.finder): merging, per-pixel assignment of contested pixels, and the whole finder
on the committed two-person fixture (tests/fixtures/person_nets/astronaut-pair.jpg, see tests/fixtures/README.md)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.runtime import finder as F
from backend.runtime.person_nets import Pose

REPO = Path(__file__).resolve().parents[1]
PAIR = REPO / "tests" / "fixtures" / "person_nets" / "astronaut-pair.jpg"


def standing_keypoints(cx: float, top: float, height: float, score: float = 0.9) -> np.ndarray:
    """17 COCO keypoints of a person standing upright, centred at ``cx``."""
    rel = [(0, 0.05), (-0.02, 0.04), (0.02, 0.04), (-0.04, 0.05), (0.04, 0.05), (-0.1, 0.2), (0.1, 0.2),
           (-0.14, 0.35), (0.14, 0.35), (-0.15, 0.48), (0.15, 0.48), (-0.07, 0.52), (0.07, 0.52), (-0.07, 0.73),
           (0.07, 0.73), (-0.07, 0.95), (0.07, 0.95)]
    return np.array([(cx + dx * height, top + dy * height, score) for dx, dy in rel], np.float32)


def test_a_nanodet_box_and_a_movenet_pose_of_one_person_merge() -> None:
    boxes = np.array([[100, 50, 200, 350], [400, 60, 480, 300]], np.float32)
    scores = np.array([0.8, 0.5], np.float32)
    poses = [Pose(standing_keypoints(150, 50, 300), np.array([105, 45, 195, 355], np.float32), 0.6),
             Pose(standing_keypoints(700, 50, 300), np.array([650, 45, 750, 355], np.float32), 0.4)]
    people = F.merge_detections(boxes, scores, poses, F.FinderOptions())
    assert [p.source for p in people] == ["both", "nanodet", "movenet"]
    assert people[0].box == (100.0, 50.0, 200.0, 350.0) and people[0].score == pytest.approx(0.8)
    assert people[0].keypoints is not None and people[1].keypoints is None


def test_a_small_box_inside_a_big_one_does_not_take_its_keypoints() -> None:
    # A child's box in front of an adult: the adult's keypoints are not the child's even where boxes overlap a bit.
    boxes = np.array([[120, 250, 180, 350]], np.float32)
    poses = [Pose(standing_keypoints(150, 0, 350), np.array([100, 0, 200, 350], np.float32), 0.6)]
    people = F.merge_detections(boxes, np.array([0.7], np.float32), poses, F.FinderOptions())
    assert sorted(p.source for p in people) == ["movenet", "nanodet"]


def person_with_mask(box: tuple, rect: tuple, value: float, keypoints: np.ndarray | None) -> F.Person:
    x0, y0, x1, y1 = rect
    return F.Person(box, 0.9, keypoints, np.full((y1 - y0, x1 - x0), value, np.float32), rect)


def test_contested_pixels_go_to_one_person_by_probability_then_distance() -> None:
    # Two people side by side, both masks claiming the whole strip between them.
    a = person_with_mask((10, 0, 50, 100), (0, 0, 70, 100), 0.9, standing_keypoints(30, 0, 100))
    b = person_with_mask((50, 0, 90, 100), (30, 0, 100, 100), 0.9, standing_keypoints(70, 0, 100))
    a.mask[80:, 40:50] = 0.55  # a is barely sure near its feet on columns 40..50, b is sure
    b.mask[80:, 10:20] = 1.0
    F.resolve_overlaps([a, b])
    fa, fb = a.full_mask(100, 100) >= 0.5, b.full_mask(100, 100) >= 0.5
    assert not (fa & fb).any()
    assert fa[50, 40] and not fb[50, 40]  # equal probability: nearer a's skeleton
    assert fb[50, 60] and not fa[50, 60]
    assert fb[90, 45] and not fa[90, 45]  # a clearly higher probability beats a slightly shorter distance
    assert fa[50, 5] and fb[50, 95]  # uncontested pixels stay


def test_a_duplicate_find_of_one_person_is_dropped() -> None:
    a = person_with_mask((10, 0, 50, 100), (0, 0, 60, 100), 0.9, None)
    b = person_with_mask((12, 5, 48, 95), (2, 2, 58, 98), 0.8, standing_keypoints(30, 0, 100))
    b.source = "movenet"
    kept = F.merge_duplicates([a, b], 0.6)
    assert kept == [a] and a.source == "both" and a.keypoints is not None


def test_full_mask_pastes_the_crop() -> None:
    p = person_with_mask((2, 3, 5, 7), (2, 3, 5, 7), 0.7, None)
    full = p.full_mask(10, 10)
    assert full.shape == (10, 10) and full[3:7, 2:5].min() == pytest.approx(0.7) and full.sum() == pytest.approx(8.4)


@pytest.fixture(scope="module")
def pair() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(PAIR), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_the_finder_keeps_two_neighbours_apart(pair: np.ndarray) -> None:
    people = F.PeopleFinder(threads=1).find(pair)
    assert len(people) == 2
    h, w = pair.shape[:2]
    masks = [p.full_mask(h, w) >= 0.5 for p in people]
    assert not (masks[0] & masks[1]).any()
    # Each mask lies on one side of the seam (the left person is the mirrored copy), one on each side.
    left_share = [m[:, : w // 2].sum() / m.sum() for m in masks]
    assert sorted(round(s) for s in left_share) == [0, 1]
    assert all(min(s, 1 - s) < 0.02 for s in left_share)
    for p, m in zip(people, masks, strict=True):
        assert p.source == "both" and p.keypoints is not None and p.keypoints.shape == (17, 3)
        assert m.sum() > 0.25 * h * (w // 2)  # a bust filling much of its half
        x0, y0, x1, y1 = p.box
        ys, xs = np.nonzero(m)
        assert x0 - 10 <= xs.mean() <= x1 + 10 and y0 - 10 <= ys.mean() <= y1 + 10


def test_detector_box_is_kept_inside_the_image() -> None:
    from backend.runtime.people import detector_box

    assert detector_box((-5.0, 10.0, 700.0, 300.5), 640, 480) == [0.0, 10.0, 639.0, 300.5]
    assert detector_box((10.0, -3.0, 20.0, 900.0), 640, 480) == [10.0, 0.0, 20.0, 479.0]


@pytest.mark.parametrize("detector_boxes", [True, False])
def test_network_finds_carry_their_detectors_box_or_their_masks_extent(pair: np.ndarray, detector_boxes: bool) -> None:
    from backend.runtime.people import NetsDetector, detector_box

    h, w = pair.shape[:2]
    found = NetsDetector(detector_boxes=detector_boxes).find(pair)
    assert found.small.shape[:2] == (h, w) and len(found.people) == 2  # small enough not to be downscaled
    detected = [detector_box(p.box, w, h) for p in F.PeopleFinder(threads=1).find(pair)]
    for (box, mask), det in zip(found.people, detected, strict=True):
        ys, xs = np.nonzero(mask)
        extent = [float(xs.min()), float(ys.min()), float(min(xs.max() + 1, w - 1)), float(min(ys.max() + 1, h - 1))]
        assert box == (det if detector_boxes else extent)


def test_find_people_checks_its_input() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        F.find_people(np.zeros((10, 10), np.uint8))


@pytest.mark.parametrize("sigma", [2.5, 12.0, 32.0])
def test_the_quick_paint_blur_matches_a_full_size_gaussian(pair: np.ndarray, sigma: float) -> None:
    from backend.runtime.people import heavy_blur

    full = cv2.GaussianBlur(pair, (0, 0), sigmaX=sigma).astype(np.int16)
    quick = heavy_blur(pair, sigma)
    assert quick.shape == pair.shape and quick.dtype == np.uint8
    diff = np.abs(quick.astype(np.int16) - full)
    # Within a couple of grey levels on average (the frame's edge differs most: the two pad differently), and far
    # from the picture itself: the paint must still hide a found person from the detector.
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 16
    assert np.abs(quick.astype(np.int16) - pair).mean() > 2 * diff.mean()


def test_mediapipe_after_the_networks_paints_with_the_quick_blur(pair: np.ndarray) -> None:
    from backend.runtime.people import Found, NetsDetector

    asked: list[dict] = []

    class Mediapipe:
        def find(self, image: np.ndarray, **kw: bool) -> Found:
            asked.append(kw)
            return Found(small=image.copy(), people=[])

    found = NetsDetector(mediapipe=Mediapipe()).find(pair, tiles=True, faces=False)
    assert len(found.people) == 2
    assert asked == [{"tiles": True, "faces": False, "paint_known": True, "quick_paint": True}]


class _CropDetector:
    """NanoDet's interface with fixed finds per crop (keyed by the crop's top-left corner, in crop pixels)."""

    nms_iou = 0.6

    def __init__(self, corners: dict[tuple[int, int], list[tuple[list[float], float]]]) -> None:
        self.corners, self.asked = corners, []

    def __call__(self, crop: np.ndarray):
        from backend.runtime.person_nets import Boxes

        corner = int(crop[0, 0, 1]), int(crop[0, 0, 0])  # `_ramp` numbers the columns and rows
        self.asked.append(corner)
        finds = self.corners.get(corner, [])
        return Boxes(np.array([b for b, _ in finds], np.float32).reshape(-1, 4),
                     np.array([s for _, s in finds], np.float32))


def _ramp(h: int, w: int) -> np.ndarray:
    """An image whose red channel numbers the rows and green the columns, so a crop tells where it was cut."""
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :, 0] = np.arange(h, dtype=np.uint8)[:, None]
    image[:, :, 1] = np.arange(w, dtype=np.uint8)[None, :]
    return image


def test_corner_crops_add_only_whole_new_people() -> None:
    from backend.runtime.person_nets import Boxes

    image = _ramp(200, 250)  # corner crops 150 x 120: top-left (0, 0), top-right (100, 0), bottom (0, 80), (100, 80)
    whole = Boxes(np.array([[20, 20, 60, 120]], np.float32), np.array([0.9], np.float32))
    detect = _CropDetector({
        (0, 0): [([20, 20, 60, 119], 0.8),     # the person found whole: not new
                 ([25, 30, 55, 60], 0.7),      # a part of them: inside the whole-image box
                 ([100, 10, 149, 60], 0.6)],   # touches the crop's right (inner) edge: cut, dropped
        (100, 0): [([30, 10, 50, 50], 0.55)],  # a small new person at image x 130-150
        (100, 80): [([10, 0, 40, 40], 0.5)],   # touches the crop's top (inner) edge: cut
    })
    out = F.with_corner_boxes(whole, image, detect)
    assert sorted(detect.asked) == [(0, 0), (0, 80), (100, 0), (100, 80)]
    np.testing.assert_allclose(out.boxes, [[20, 20, 60, 120], [130, 10, 150, 50]])
    np.testing.assert_allclose(out.scores, [0.9, 0.55])


def test_a_new_person_seen_by_two_overlapping_crops_is_added_once() -> None:
    from backend.runtime.person_nets import Boxes

    image = _ramp(200, 250)
    nobody = Boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    # Image x 110-140, y 90-110: inside the top-left, top-right, bottom-left and bottom-right crops alike.
    detect = _CropDetector({(0, 0): [([110, 90, 140, 110], 0.6)], (100, 0): [([10, 90, 40, 110], 0.7)],
                            (0, 80): [([110, 10, 140, 30], 0.5)], (100, 80): [([10, 10, 40, 30], 0.65)]})
    out = F.with_corner_boxes(nobody, image, detect)
    np.testing.assert_allclose(out.boxes, [[110, 90, 140, 110]])
    np.testing.assert_allclose(out.scores, [0.7])


def test_the_finder_looks_in_the_corners_only_when_asked(pair: np.ndarray, monkeypatch) -> None:
    finder = F.PeopleFinder(threads=1)
    calls = []
    monkeypatch.setattr(F, "with_corner_boxes", lambda found, image, detect: calls.append(image.shape) or found)
    plain = finder.find(pair)
    assert calls == []
    tiled = finder.find(pair, tiles=True)
    assert calls == [pair.shape] and [p.box for p in tiled] == [p.box for p in plain]


def test_the_quick_paint_is_shared_by_the_crops(pair: np.ndarray) -> None:
    from backend.runtime.people import _Blur, heavy_blur

    sigma = max(3.0, max(pair.shape[:2]) / 40)
    quick = _Blur(pair, quick=True)
    np.testing.assert_array_equal(quick.image, heavy_blur(pair, sigma))
    crop = quick.crop(10, 20, 110, 220)
    assert crop.quick and np.shares_memory(crop.image, quick.image)
    np.testing.assert_array_equal(_Blur(pair).image, cv2.GaussianBlur(pair, (0, 0), sigmaX=sigma))


def test_mediapipe_passes_paint_each_find_out_to_its_grown_mask_and_no_further(pair: np.ndarray) -> None:
    """The detector's next call sees the picture with exactly the found mask grown by `PAINT_GROW_PX` blurred, also
    for a find at the picture's edge (the paint is made within the mask's rectangle)."""
    import threading
    from types import SimpleNamespace

    from backend.runtime.people import PAINT_GROW_PX, PoseDetector, _Blur

    h, w = pair.shape[:2]
    first, second = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    first[20:90, 0:30] = 1.0  # touches the left edge
    second[40:120, w // 2:w // 2 + 25] = 1.0
    seen: list[np.ndarray] = []
    masks = iter([first, second, None])

    def process(work: np.ndarray) -> SimpleNamespace:
        seen.append(work.copy())
        return SimpleNamespace(segmentation_mask=next(masks))

    detector = PoseDetector.__new__(PoseDetector)
    detector._pose, detector._lock = SimpleNamespace(process=process), threading.Lock()
    detector.max_people, detector.threshold = 5, 0.5
    blur = _Blur(pair, quick=True)
    found = detector._passes(pair, blur)
    assert len(found) == 2 and len(seen) == 3
    np.testing.assert_array_equal(seen[0], pair)  # the caller's picture is not painted
    kernel = np.ones((2 * PAINT_GROW_PX + 1,) * 2, np.uint8)
    expected = pair.copy()
    for mask, after in ((first, seen[1]), (second, seen[2])):
        grown = cv2.dilate((mask > 0.5).astype(np.uint8), kernel) > 0
        expected[grown] = blur.image[grown]
        np.testing.assert_array_equal(after, expected)
