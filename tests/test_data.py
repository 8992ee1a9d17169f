import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.data import (
    HELD_OUT_SETS,
    DataError,
    Item,
    load_set,
    person_targets,
    read_image,
    read_instances,
    split,
    training_items,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "coco128-persons").is_dir(), reason="needs the data set coco128-persons in ../shared/data (beside the clone; the data folder's README says what each set is)")


def make_set(tmp_path: Path, kind: str, labels: np.ndarray, name: str = "tiny", alpha: bool = False) -> Path:
    root = tmp_path / name
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    h, w = labels.shape
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 2] = 200  # red in BGR order on disk
    cv2.imwrite(str(root / "images" / "a.png"), image)
    cv2.imwrite(str(root / "instances" / "a.png"), labels)
    if alpha:
        (root / "alpha").mkdir()
        cv2.imwrite(str(root / "alpha" / "a_1.png"), (labels == 1).astype(np.uint8) * 128)
    manifest = {
        "name": name, "source": "test", "license": "none", "mask_kind": kind, "note": "",
        "items": [{"id": "a", "image": "images/a.png", "instances": "instances/a.png", "width": w, "height": h}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_instance_targets_small_ignore_and_others(tmp_path):
    labels = np.zeros((100, 100), np.uint8)
    labels[10:50, 10:40] = 1      # 12 %
    labels[10:50, 60:90] = 2      # 12 %
    labels[90:93, 0:3] = 3        # 0.09 %: too small to be a target
    labels[60:70, 40:60] = 255
    ds = load_set(make_set(tmp_path, "instance", labels))
    assert ds.mask_kind == "instance" and len(ds.items) == 1
    t = person_targets(ds.items[0])
    assert t.labels == [1, 2] and len(t.small) == 1
    assert t.ignore.sum() == 200 and not t.all_people
    others0 = t.others(0)
    assert others0[20, 70] and others0[91, 1] and not others0[20, 20]
    with pytest.raises(IndexError):
        t.others(2)
    assert len(t.people()) == 3


def test_single_person_and_all_people_kinds(tmp_path):
    labels = np.zeros((50, 50), np.uint8)
    labels[5:45, 10:30] = 1
    t = person_targets(load_set(make_set(tmp_path, "single-person", labels, "sp")).items[0])
    assert len(t.masks) == 1 and t.unlabelled_people and not t.all_people and not t.others(0).any()
    t = person_targets(load_set(make_set(tmp_path, "all-people", labels, "ap")).items[0])
    assert len(t.masks) == 1 and t.all_people


def test_read_image_is_rgb_and_alpha_maps(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    labels[5:15, 5:15] = 1
    ds = load_set(make_set(tmp_path, "instance", labels, alpha=True))
    image = read_image(ds.items[0].image_path)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8 and image[0, 0, 0] == 200
    t = person_targets(ds.items[0])
    assert t.alphas[0] is not None and abs(float(t.alphas[0][10, 10]) - 128 / 255) < 1e-6


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no manifest"):
        load_set(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="JSON"):
        load_set(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x", "mask_kind": "weird", "items": []}))
    with pytest.raises(DataError, match="mask_kind"):
        load_set(tmp_path)
    with pytest.raises(DataError, match="cannot read"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match="cannot read"):
        read_instances(tmp_path / "missing.png")


def test_size_mismatch_is_reported(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    item = load_set(make_set(tmp_path, "instance", labels)).items[0]
    wrong = Item(item.set_name, item.id, item.image_path, item.instances_path, "instance", 31, 20)
    with pytest.raises(DataError, match="manifest says"):
        person_targets(wrong)


def _items(n, set_name="s"):
    return [Item(set_name, f"id{i}", Path("x"), Path("y"), "instance", 1, 1) for i in range(n)]


def test_split_is_deterministic_and_stable():
    items = _items(400)
    train, val = split(items, 0.1)
    assert len(train) + len(val) == 400 and 15 < len(val) < 70
    assert split(list(reversed(items)), 0.1)[1] == list(reversed(val))
    # An item's side does not depend on the other items.
    sub_val = split(items[:50], 0.1)[1]
    assert set(i.id for i in sub_val) == set(i.id for i in val if int(i.id[2:]) < 50)
    with pytest.raises(ValueError):
        split(items, 1.5)


def test_davis_frames_split_in_blocks():
    items = [Item("davis16-person", f"parkour_{3 * k:05d}", Path("x"), Path("y"), "single-person", 1, 1)
             for k in range(100)]
    _, val = split(items, 0.3)
    blocks = {int(i.id.split("_")[1]) // 30 for i in val}
    assert sum(int(i.id.split("_")[1]) // 30 in blocks for i in items) == len(val)


@needs_data
def test_real_sets_read():
    for name in ("coco128-persons", "pennfudan-sample", "ccp-fashion", "davis16-person", "humanseg300-removebg"):
        ds = load_set(DATA / name)
        assert ds.items and ds.license
        item = ds.items[0]
        image = read_image(item.image_path)
        assert image.shape == (item.height, item.width, 3)
        t = person_targets(item)
        for mask in t.masks:
            assert mask.shape == (item.height, item.width) and mask.sum() >= 0.01 * mask.size
    pf = person_targets(load_set(DATA / "pennfudan-sample").items[0])
    assert pf.unlabelled_people and len(pf.masks) == 2


@needs_data
def test_held_out_sets_never_in_training():
    sets = [load_set(DATA / n) for n in ("coco128-persons", "pennfudan-sample", "humanseg300-removebg")]
    train, val = training_items(sets)
    assert train and val
    assert not any(i.set_name in HELD_OUT_SETS for i in train + val)
