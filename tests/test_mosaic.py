"""Mosaics (`backend.synth.mosaic`): the grid itself, the validation set written from val-split photos only, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.data import load_set, person_targets, split
from backend.synth.mosaic import IGNORE, MIN_FRAC, main, mosaic, write_set


def test_mosaic_shrinks_people_and_keeps_their_labels_apart():
    parts = []
    for k in range(4):
        labels = np.zeros((300, 200), np.uint8)
        labels[50:250, 50:150] = 1
        if k == 1:
            labels[0:10, 0:10] = 2  # shrinks below MIN_FRAC of the mosaic
        if k == 2:
            labels[260:, :] = IGNORE
        parts.append((np.full((300, 200, 3), 60 * k, np.uint8), labels))
    image, labels = mosaic(parts, 384, np.random.default_rng(0))
    assert image.shape == (384, 384, 3) and labels.shape == (384, 384)
    values = [v for v in np.unique(labels) if v not in (0, IGNORE)]
    assert values == [1, 2, 3, 4]
    for v in values:
        assert MIN_FRAC < (labels == v).mean() < 0.25  # each person at most a quarter of the picture
        ys, xs = np.nonzero(labels == v)
        cell = (int(ys.mean() >= 192), int(xs.mean() >= 192))
        assert image[ys[0], xs[0]].tolist() == [60 * (cell[0] * 2 + cell[1])] * 3  # in its own part's cell
    assert (labels == IGNORE).any()


def _single_person_set(root: Path, count: int, name: str = "people") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    items = []
    for i in range(count):
        image = np.full((120, 80, 3), 40 + i, np.uint8)
        labels = np.zeros((120, 80), np.uint8)
        labels[20:110, 20:60] = 1
        cv2.imwrite(str(root / "images" / f"p{i}.png"), image)
        cv2.imwrite(str(root / "instances" / f"p{i}.png"), labels)
        items.append({"id": f"p{i}", "image": f"images/p{i}.png", "instances": f"instances/p{i}.png",
                      "width": 80, "height": 120})
    (root / "manifest.json").write_text(json.dumps({"name": name, "source": "test", "license": "none",
                                                    "mask_kind": "single-person", "note": "", "items": items}))
    return root


def test_write_set_uses_only_validation_photos_and_loads_as_an_instance_set(tmp_path):
    source = load_set(_single_person_set(tmp_path / "src", 80))
    val_keys = {it.key for it in split(source.items)[1]}
    assert len(val_keys) >= 4, "the hash split must give this test at least four validation photos"
    out = tmp_path / "mosaics"
    write_set(out, [source], count=5, size=256, seed=0)
    ds = load_set(out)
    assert ds.mask_kind == "instance" and len(ds.items) == 5
    manifest = json.loads((out / "manifest.json").read_text())
    used = [key for entry in manifest["items"] for key in entry["from"]]
    assert set(used) <= val_keys
    assert max(used.count(k) for k in set(used)) - min(used.count(k) for k in set(used)) <= 1  # used evenly
    for item, entry in zip(ds.items, manifest["items"], strict=True):
        t = person_targets(item)
        assert len(t.masks) == entry["persons"] == 4
    with pytest.raises(FileExistsError):
        write_set(out, [source], count=1, size=256, seed=0)


def test_cli_refuses_held_out_sets_and_too_few_photos(tmp_path, capsys):
    held = _single_person_set(tmp_path / "held", 8, name="coco128-persons")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "o1"), "--data", str(held)])
    assert "held out" in capsys.readouterr().err
    few = _single_person_set(tmp_path / "few", 3)
    assert main(["--out", str(tmp_path / "o2"), "--data", str(few)]) == 1
    assert "needs 4 validation photos" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "manifest.json").exists()
