"""The converted person networks (backend.runtime.person_nets): decoders on hand-made tensors, the committed ONNX
files against the manifest, and each network on the committed astronaut photo (samples/astronaut.png)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.runtime import person_nets as pn

REPO = Path(__file__).resolve().parents[1]
FILES = (pn.NANODET_FILE, pn.MOVENET_FILE, pn.BLAZEPOSE_FILE)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(REPO / "samples" / "astronaut.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def empty_nanodet_outputs() -> dict[str, np.ndarray]:
    out = {}
    for s in pn.NanoDet.STRIDES:
        cells = (pn.NanoDet.SIZE // s) ** 2
        out[f"cls_s{s}"] = np.zeros((1, cells, 80), np.float32)
        out[f"reg_s{s}"] = np.zeros((1, cells, 44), np.float32)
    return out


def test_nanodet_decodes_distance_bins_to_a_known_box() -> None:
    out = empty_nanodet_outputs()
    side = 416 // 16
    cell = 5 * side + 7  # row 5, column 7 of the stride-16 grid: centre (7.5 × 16, 5.5 × 16) = (120, 88)
    out["cls_s16"][0, cell, 0] = 0.9
    out["cls_s16"][0, cell + 1, 3] = 0.99  # a confident motorbike is not a person
    logits = np.full((4, 11), -50.0, np.float32)
    for k, b in enumerate((2, 3, 4, 1)):  # left, top, right, bottom: bins 2, 3, 4, 1 strides
        logits[k, b] = 50.0
    out["reg_s16"][0, cell] = logits.reshape(44)
    boxes, scores = pn.NanoDet.decode(out, 0.5)
    assert scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(boxes[0], [120 - 32, 88 - 48, 120 + 64, 88 + 16], atol=1e-3)


def test_nanodet_expected_distance_between_bins() -> None:
    out = empty_nanodet_outputs()
    out["cls_s8"][0, 0, 0] = 0.6
    logits = np.full((4, 11), -50.0, np.float32)
    logits[:, 1] = logits[:, 2] = 0.0  # half on bin 1, half on bin 2: 1.5 strides
    out["reg_s8"][0, 0] = logits.reshape(44)
    boxes, _ = pn.NanoDet.decode(out, 0.5)
    np.testing.assert_allclose(boxes[0], [4 - 12, 4 - 12, 4 + 12, 4 + 12], atol=1e-3)


def test_nanodet_letterbox_maps_back_to_image_pixels() -> None:
    image = np.zeros((208, 832, 3), np.uint8)  # 4 × as wide as high: scale 0.5, 104 px high, 156 px padding above
    x, lb = pn.NanoDet().preprocess(image)
    assert x.shape == (1, 3, 416, 416) and x.dtype == np.float32
    assert (lb.scale, lb.left, lb.top) == (0.5, 0, 156)
    np.testing.assert_allclose(lb.to_image(np.array([[100.0, 204.0]])), [[200.0, 96.0]])
    # Black padding after BGR mean/std: channel 0 is blue.
    assert x[0, 0, 0, 0] == pytest.approx(-103.53 / 57.375)


def test_movenet_rows_to_keypoints_and_boxes_through_the_letterbox() -> None:
    net = pn.MoveNet()
    image = np.zeros((300, 500, 3), np.uint8)
    assert net.input_size(300, 500) == (160, 256)  # 300 × 0.512 = 153.6 → up to a multiple of 32
    x, lb = net.preprocess(image)
    assert x.shape == (1, 160, 256, 3) and x.dtype == np.int32
    assert (lb.left, lb.top, lb.width, lb.height) == (0, 3, 256, 160)

    def norm(px: float, py: float) -> tuple[float, float]:  # image pixel → (y, x) normalised to the padded input
        return (py * lb.scale + lb.top) / lb.height, (px * lb.scale + lb.left) / lb.width

    rows = np.zeros((6, 56), np.float32)
    for k in range(17):
        y, xx = norm(100 + k, 50 + 2 * k)
        rows[0, 3 * k:3 * k + 3] = (y, xx, 0.8)
    (ymin, xmin), (ymax, xmax) = norm(90, 40), norm(130, 120)
    rows[0, 51:56] = (ymin, xmin, ymax, xmax, 0.7)
    rows[1, 55] = 0.1  # below the threshold
    people = pn.MoveNet.decode(rows, lb, 0.2, (300, 500))
    assert len(people) == 1 and people[0].score == pytest.approx(0.7)
    np.testing.assert_allclose(people[0].keypoints[3], [103, 56, 0.8], atol=1e-3)
    np.testing.assert_allclose(people[0].box, [90, 40, 130, 120], atol=1e-3)


def test_blazepose_crop_mask_lands_where_the_crop_was() -> None:
    seg = np.zeros((256, 256), np.float32)
    seg[64:128, 64:128] = 1.0  # crop pixels 64..128 at 2 image px each (side 512)
    m = pn.BlazePoseSeg.decode(seg, np.zeros(195, np.float32), 0.9, (-10, 20, 512), (300, 400))
    assert m.rect == (0, 20, 400, 300)
    full = m.full(300, 400)
    # The block covers image rows 20 + 128 .. 20 + 256 and columns -10 + 128 .. -10 + 256.
    assert full[210, 180] == pytest.approx(1.0)
    assert full[120, 90] == 0.0 and full[290, 300] == 0.0
    block = np.argwhere(full > 0.5)
    assert block.min(axis=0).tolist() == [148, 118]
    assert block.max(axis=0).tolist() == [275, 245]


def test_blazepose_square_is_centred_and_125_percent_of_the_long_side() -> None:
    assert pn.BlazePoseSeg().square(np.array([100, 50, 200, 450])) == (-100, 0, 500)


def test_committed_files_match_the_manifest() -> None:
    manifest = json.loads((REPO / "models" / "manifest.json").read_text(encoding="utf-8"))
    entries = {f["path"]: (m, f) for m in manifest["models"] for f in m["files"]}
    for file in FILES + ("LICENSE", "NOTICE"):
        model, record = entries[f"person/{file}"]
        path = REPO / "models" / "person" / file
        assert path.stat().st_size == record["size"]
        assert pn._sha256(path) == record["sha256"]
        assert model["license"] == "Apache-2.0" and model["default"] is True and record["url"] is None
    for file in FILES:
        assert pn.verified_path(file) == REPO / "models" / "person" / file
    assert "Apache License" in (REPO / "models" / "person" / "LICENSE").read_text()


def test_a_replaced_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "person").mkdir()
    (tmp_path / "person" / pn.NANODET_FILE).write_bytes(b"not a model")
    manifest = {"schema": 1, "models": [{"name": "x", "version": "1", "license": "Apache-2.0", "default": True,
                                         "files": [{"path": f"person/{pn.NANODET_FILE}", "sha256": "0" * 64,
                                                    "size": 11, "url": None}]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="sha256"):
        pn.verified_path(pn.NANODET_FILE, tmp_path)


def test_nanodet_finds_the_astronaut(astronaut: np.ndarray) -> None:
    found = pn.NanoDet(threads=1)(astronaut)
    assert len(found.boxes) == 1 and found.scores[0] > 0.5
    x0, y0, x1, y1 = found.boxes[0]
    assert x0 < 60 and y0 < 60 and 330 < x1 < 400 and y1 > 480  # she fills the left 3/4 of the photo


def test_movenet_finds_the_astronaut_and_her_face(astronaut: np.ndarray) -> None:
    people = pn.MoveNet(threads=1)(astronaut)
    assert len(people) == 1 and people[0].score > 0.3
    nose = people[0].keypoints[0]
    assert abs(nose[0] - 224) < 25 and abs(nose[1] - 122) < 25 and nose[2] > 0.3


def test_blazepose_segments_the_astronaut(astronaut: np.ndarray) -> None:
    m = pn.BlazePoseSeg(threads=1)(astronaut, np.array([[15, 15, 364, 507]], np.float32))[0]
    full = m.full(512, 512)
    assert m.flag > 0.5
    assert full[122, 224] > 0.9 and full[300, 150] > 0.9  # face, suit
    assert full[50, 470] < 0.1  # the flag behind her
    assert (full[:, 380:] > 0.5).mean() < 0.1
    assert m.landmarks.shape == (39, 5)
