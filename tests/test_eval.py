import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.data import load_set
from backend.eval.run import EvalConfig, evaluate, format_table, main

H, W = 120, 160


def blob(cy, cx, ry, rx):
    yy, xx = np.mgrid[:H, :W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def make_set(root: Path, n_items: int = 2) -> Path:
    """Instance-kind set of two well separated coloured 'people' on a noisy background."""
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    rng = np.random.default_rng(0)
    items = []
    for k in range(n_items):
        image = rng.integers(100, 150, (H, W, 3)).astype(np.uint8)
        labels = np.zeros((H, W), np.uint8)
        a, b = blob(60, 40 + 3 * k, 45, 20), blob(62, 115, 40, 18)
        image[a], image[b] = (220, 30, 30), (30, 40, 220)
        image[100:106, :] = (215, 35, 35)  # a red kerb under both: GrabCut takes part of it, so rounds 2+ happen
        labels[a], labels[b] = 1, 2
        labels[0:3, 0:3] = 255
        cv2.imwrite(str(root / "images" / f"i{k}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "instances" / f"i{k}.png"), labels)
        items.append({"id": f"i{k}", "image": f"images/i{k}.png", "instances": f"instances/i{k}.png",
                      "width": W, "height": H})
    (root / "manifest.json").write_text(json.dumps({"name": "blobs", "source": "test", "license": "test",
                                                    "mask_kind": "instance", "note": "", "items": items}))
    return root


def test_cli_end_to_end_with_grabcut(tmp_path, capsys):
    data = make_set(tmp_path / "blobs", 3)
    out = tmp_path / "out" / "gc.json"
    assert main(["--data", str(data), "--method", "grabcut", "--limit", "2", "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "vs binary mask" in printed and "n/a" in printed
    report = json.loads(out.read_text())
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = report["summary"]
    assert report["data"][0]["items"] == 2 and report["data"][0]["targets"] == 4
    assert s["text"]["n"] == 0 and "n/a" in s["text"]["status"] and report["unsupported_modes"] == ["text"]
    assert s["box"]["n"] == 4 and s["box"]["iou"] > 0.8
    assert s["box"]["leak"] < 0.05 and s["box"]["boundary_f"] > 0.7
    assert s["clicks"]["n"] == 4 and len(s["clicks"]["curve"]) == 20 and 1 <= s["clicks"]["noc90"] <= 20
    assert len(s["scribbles"]["curve"]) == 5 and len(s["mixed"]["curve"]) == 5
    assert s["timing"]["refine_ms"]["median"] > 0
    assert report["matting_reference"].startswith("vs binary mask")
    for r in report["records"]:
        assert all(0.0 <= v <= 1.0 for v in r["ious"])
    # Same seed, same prompts, same numbers.
    out2 = tmp_path / "again.json"
    assert main(["--data", str(data), "--method", "grabcut", "--limit", "2", "--modes", "box,scribbles",
                 "--json", str(out2), "--quiet"]) == 0
    again = json.loads(out2.read_text())["summary"]
    assert again["box"]["iou"] == s["box"]["iou"] and again["scribbles"]["curve"] == s["scribbles"]["curve"]


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    data = make_set(tmp_path / "blobs", 1)
    assert main(["--data", str(data), "--method", "grabcut", "--modes", "box,lasso"]) == 2
    assert "lasso" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "nothing"), "--method", "grabcut"]) == 2
    assert main(["--data", str(data), "--method", "grabcut", "--weights", "w.pt"]) == 2
    assert main(["--data", str(data), "--method", "grabcut", "--box-margin", "2"]) == 2


def test_box_margin_gives_a_looser_box(tmp_path):
    ds = load_set(make_set(tmp_path / "blobs", 1))
    labels = cv2.imread(str(ds.items[0].instances_path), cv2.IMREAD_UNCHANGED)

    class Recorder(Oracle):
        boxes: list = []

        def predict(self, sid, prompts):
            self.boxes.append(prompts["box"])
            return super().predict(sid, prompts)

    tight, loose = Recorder(labels), Recorder(labels)
    tight.boxes, loose.boxes = [], []
    evaluate(tight, [(ds, ds.items)], EvalConfig(modes=("box",), matting_metrics=False))
    report = evaluate(loose, [(ds, ds.items)], EvalConfig(modes=("box",), matting_metrics=False, box_margin=0.1))
    assert report["settings"]["box_margin"] == 0.1
    for (a0, b0, a1, b1), (c0, d0, c1, d1) in zip(tight.boxes, loose.boxes, strict=True):
        assert c0 < a0 and d0 < b0 and c1 > a1 and d1 > b1  # every side moved out (none of these touch the frame)
        assert abs((c1 - c0) - 1.2 * (a1 - a0)) < 1e-3


class Oracle:
    """Returns person 0's mask for any text, and the target once any visual prompt lands inside it."""

    def __init__(self, labels):
        self.labels = labels
        self.resets = 0

    def open(self, image):
        return "s"

    def reset(self, sid):
        self.resets += 1

    def close(self, sid):
        pass

    def predict(self, sid, prompts):
        if prompts.get("text"):
            return (self.labels == 1).astype(np.float32)
        for x, y, _ in prompts.get("clicks", []):
            value = self.labels[int(y), int(x)]
            if value:
                return (self.labels == value).astype(np.float32)
        return np.zeros(self.labels.shape, np.float32)


def test_text_hit_rate_and_noc_with_an_oracle(tmp_path):
    ds = load_set(make_set(tmp_path / "blobs", 1))
    labels = cv2.imread(str(ds.items[0].instances_path), cv2.IMREAD_UNCHANGED)
    oracle = Oracle(labels)
    report = evaluate(oracle, [(ds, ds.items)], EvalConfig(modes=("clicks", "text"), matting_metrics=False))
    s = report["summary"]
    assert s["clicks"]["iou@1"] == 1.0 and s["clicks"]["noc90"] == 1.0
    text_recs = [r for r in report["records"] if r["mode"] == "text"]
    # Person 0 (red, left) is always "found"; person 1 never is.
    assert all(all(r["hits"]) for r in text_recs if r["target"] == 0)
    assert not any(any(r["hits"]) for r in text_recs if r["target"] == 1)
    assert s["text"]["hit_rate"] == pytest.approx(0.5)
    assert "the person on the left" in [e["text"] for r in text_recs for e in r["expressions"]]
    assert "hit" in format_table(report)
    assert "by target size" in format_table(report)
    assert [b["n"] for b in s["clicks"]["by_size"]] == [0, 0, 2]  # both blobs cover 12-15 % of the image


class Stubborn(Oracle):
    """Always answers person 1's mask (the left, red blob), whatever the marks say."""

    def predict(self, sid, prompts):
        return (self.labels == 1).astype(np.float32)


def test_marks_obeyed_counts_the_marks_the_matte_puts_on_their_side(tmp_path):
    ds = load_set(make_set(tmp_path / "blobs", 1))
    labels = cv2.imread(str(ds.items[0].instances_path), cv2.IMREAD_UNCHANGED)
    config = EvalConfig(modes=("clicks", "scribbles"), max_clicks=5, matting_metrics=False)
    good = evaluate(Oracle(labels), [(ds, ds.items)], config)
    assert good["summary"]["clicks"]["marks_obeyed"] == 1.0  # one click, on the target, answered with the target
    stubborn = evaluate(Stubborn(labels), [(ds, ds.items)], config)
    by_target = {r["target"]: r["marks_obeyed"] for r in stubborn["records"] if r["mode"] == "clicks"}
    kept, total = by_target[1]  # person 2 is never answered: its positive clicks and the negative ones on person 1 fail
    assert total >= 2 and kept == 0
    assert 0 < stubborn["summary"]["clicks"]["marks_obeyed"] < 1
    assert stubborn["summary"]["scribbles"]["marks_obeyed"] is not None
    assert "marks" in format_table(stubborn)


def test_dfimat_engine_plumbing_with_tiny_checkpoint(tmp_path):
    engine_mod = pytest.importorskip("backend.runtime.engine")
    import torch

    from backend.dfimat.model import build_tiny_checkpoint

    torch.set_num_threads(1)
    weights = build_tiny_checkpoint(tmp_path / "tiny.pt")
    ds = load_set(make_set(tmp_path / "blobs", 1))
    engine = engine_mod.Engine.load(weights=str(weights))
    report = evaluate(engine, [(ds, ds.items)], EvalConfig(modes=("box", "text"), max_expressions=1,
                                                           matting_metrics=False))
    assert report["errors"] == []
    assert report["summary"]["box"]["n"] == 2 and report["summary"]["text"]["expressions"] == 2


def test_empty_selection_reports_nothing_without_crashing(tmp_path):
    ds = load_set(make_set(tmp_path / "blobs", 1))
    report = evaluate(Oracle(np.zeros((H, W), np.uint8)), [(ds, [])], EvalConfig())
    assert report["data"][0]["items"] == 0
    assert report["summary"]["box"]["n"] == 0 and report["summary"]["box"]["iou"] is None
    table = format_table(report)
    assert "n/a" in table
    from backend.eval.run import write_plot

    assert write_plot(report, tmp_path / "empty.png").is_file()


class BoxOracle(Oracle):
    """Finds the left person and a patch of background; a box gives the person under its centre (or nothing)."""

    def detect_people(self, image):
        return [[20.0, 15.0, 62.0, 105.0], [130.0, 0.0, 159.0, 12.0]]

    def predict(self, sid, prompts):
        if prompts.get("box"):
            x0, y0, x1, y1 = prompts["box"]
            value = self.labels[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            return (self.labels == value).astype(np.float32) if value else np.zeros(self.labels.shape, np.float32)
        return super().predict(sid, prompts)


def test_people_mode_scores_every_person_mattes(tmp_path, capsys):
    ds = load_set(make_set(tmp_path / "blobs", 1))
    labels = cv2.imread(str(ds.items[0].instances_path), cv2.IMREAD_UNCHANGED)
    report = evaluate(BoxOracle(labels), [(ds, ds.items)], EvalConfig(modes=("people",), matting_metrics=False))
    s = report["summary"]["people"]
    # Two targets: the left one matted exactly, the right one never found; the background patch matches nobody.
    assert s["n"] == 2 and s["iou"] == pytest.approx(0.5) and s["found"] == pytest.approx(0.5)
    assert s["mattes"] == 2 and s["unmatched"] == 1
    assert "found 50%" in format_table(report)
    assert main(["--data", str(ds.root), "--method", "grabcut", "--modes", "people,box", "--quiet"]) == 0
    assert "people" in capsys.readouterr().out


def test_by_size_splits_targets_by_their_share_of_the_image():
    from backend.eval.run import SIZE_BINS, by_size, final_iou

    recs = [{"area_frac": 0.01, "ious": [0.4, 0.6, 0.7, 0.8, 0.9, 0.95], "leak": 0.5},
            {"area_frac": 0.02, "ious": [0.6], "leak": 0.1},  # a run given fewer clicks keeps its last value
            {"area_frac": 0.05, "ious": [0.8, 0.9], "leak": None},
            {"area_frac": 0.5, "ious": [0.95], "leak": 0.0}]
    bins = by_size("clicks", recs, max_clicks=20)
    assert [b["bin"] for b in bins] == [label for _, _, label in SIZE_BINS]
    assert [b["n"] for b in bins] == [2, 1, 1]
    assert bins[0]["iou"] == pytest.approx((0.9 + 0.6) / 2)  # the 5th click, or the last one given
    assert bins[0]["leak_median"] == pytest.approx(0.3) and bins[1]["leak_median"] is None
    assert final_iou("scribbles", [0.5, 0.7], 20) == 0.7 and final_iou("text", [0.2, 0.4], 20) == pytest.approx(0.3)
    assert final_iou("box", [0.8], 20) == 0.8 and final_iou("clicks", [0.1, 0.2, 0.3], 2) == 0.2


def test_error_split_says_whether_the_matte_picked_someone_else(tmp_path):
    ds = load_set(make_set(tmp_path / "blobs", 1))
    labels = cv2.imread(str(ds.items[0].instances_path), cv2.IMREAD_UNCHANGED)
    report = evaluate(Stubborn(labels), [(ds, ds.items)], EvalConfig(modes=("box",), matting_metrics=False))
    recs = {r["target"]: r for r in report["records"]}
    assert recs[0]["ious"] == [1.0] and recs[0]["errors"] == dict.fromkeys(("outline", "shape", "others", "rest"), 0.0)
    wrong = recs[1]["errors"]  # answered with the other blob: the blob is "other people", the missed target "rest"
    areas = [np.count_nonzero(labels == v) for v in (1, 2)]
    assert wrong["outline"] == 0.0  # the blobs are apart, so no wrong pixel is near the target's outline
    assert wrong["others"] == pytest.approx(areas[0] / sum(areas))
    assert wrong["rest"] == pytest.approx(areas[1] / sum(areas))
    split = report["summary"]["box"]["error_split"]
    assert split["others"] == pytest.approx(wrong["others"] / 2)
    assert "other people" in format_table(report)


def test_drop_share_counts_corrective_rounds_that_lose_more_than_the_margin():
    from backend.eval.run import drop_share

    # Steps: -0.03 (a drop), +0.1, -0.01 (within the margin) | -0.05 (a drop); a one-round run has no step.
    assert drop_share([[0.8, 0.77, 0.87, 0.86], [0.5, 0.45], [0.9]]) == 2 / 4
    assert drop_share([[0.7]]) is None
