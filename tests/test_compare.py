"""`python -m backend.compare`: paired differences between two evaluation reports."""

import json

import numpy as np
import pytest

from backend.eval.compare import bootstrap_interval, main, paired_rows


def _report(ious_by_target: dict[int, list[float]], mode: str = "clicks", seed: int = 0) -> dict:
    records = [{"set": "s", "item": f"i{t}", "target": 0, "mode": mode, "ious": ious}
               for t, ious in ious_by_target.items()]
    records.append({"set": "s", "item": "skipped", "target": 0, "mode": "text", "skipped": "no expression"})
    return {"settings": {"seed": seed}, "records": records}


def test_paired_rows_pair_targets_and_read_early_stops_as_their_last_value():
    before = _report({0: [0.5, 0.6, 0.7, 0.8, 0.9], 1: [0.2, 0.3, 0.95], 2: [0.4] * 5})
    after = _report({0: [0.6, 0.7, 0.8, 0.9, 0.95], 1: [0.3, 0.96], 3: [1.0] * 5})
    rows = {r["measure"]: r for r in paired_rows(before, after, resamples=200)}
    assert set(rows) == {"IoU@1", "IoU@3", "IoU@5"} and rows["IoU@1"]["n"] == 2  # targets 2 and 3 are unpaired
    assert rows["IoU@1"]["diff"] == pytest.approx(0.1)
    assert rows["IoU@5"]["before"] == pytest.approx((0.9 + 0.95) / 2)
    assert rows["IoU@5"]["after"] == pytest.approx((0.95 + 0.96) / 2)
    assert rows["IoU@1"]["better"] == 2 and rows["IoU@1"]["worse"] == 0


def test_text_targets_score_the_mean_over_their_expressions():
    before = {"settings": {"seed": 0}, "records": [
        {"set": "s", "item": "a", "target": 0, "mode": "text", "ious": [0.2, 0.8], "hits": [False, True]}]}
    after = {"settings": {"seed": 0}, "records": [
        {"set": "s", "item": "a", "target": 0, "mode": "text", "ious": [0.6, 0.8], "hits": [True, True]}]}
    rows = {r["measure"]: r for r in paired_rows(before, after, resamples=50)}
    assert rows["IoU"]["before"] == pytest.approx(0.5) and rows["IoU"]["diff"] == pytest.approx(0.2)
    assert rows["right"]["before"] == pytest.approx(0.5) and rows["right"]["after"] == pytest.approx(1.0)


def test_people_targets_score_best_iou_and_found():
    before = _report({0: [0.45], 1: [0.8], 2: [0.0]}, mode="people")
    after = _report({0: [0.55], 1: [0.8], 2: [0.3]}, mode="people")
    rows = {r["measure"]: r for r in paired_rows(before, after, resamples=50)}
    assert rows["best IoU"]["diff"] == pytest.approx((0.1 + 0.0 + 0.3) / 3)
    assert rows["found"]["before"] == pytest.approx(1 / 3) and rows["found"]["after"] == pytest.approx(2 / 3)


def test_bootstrap_interval_brackets_the_mean_and_is_a_point_for_constant_differences():
    d = np.random.default_rng(0).normal(0.05, 0.1, 400)
    lo, hi = bootstrap_interval(d)
    assert lo < d.mean() < hi and hi - lo < 0.05
    assert bootstrap_interval(np.full(10, 0.2)) == pytest.approx((0.2, 0.2))
    with pytest.raises(ValueError):
        bootstrap_interval(np.array([]))


def test_cli_refuses_unpaired_reports(tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_report({0: [0.5]}, "box")))
    b.write_text(json.dumps(_report({0: [0.7]}, "box")))
    c.write_text(json.dumps(_report({0: [0.7]}, "box", seed=1)))
    assert main([str(a), str(b)]) == 0 and "+0.200" in capsys.readouterr().out
    assert main([str(a), str(c)]) == 2 and "different seeds" in capsys.readouterr().err
    assert main([str(a), str(tmp_path / "missing.json")]) == 2
