"""A corrective mark changes the matte near itself only (backend.runtime.local)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.runtime.local import LATE_ROUND, SEAM_PX, keep_local, reach

H, W = 200, 300


def _box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_changes_away_from_the_new_mark_are_undone_and_the_marked_one_kept():
    previous = _box(50, 20, 120, 180)
    # The new matte drops the wrongly included shoulder the negative click is on, but also gains a neighbour's arm
    # far away and loses the feet.
    new = (previous & ~_box(50, 20, 70, 60)) | _box(200, 80, 260, 100)
    new &= ~_box(50, 160, 120, 180)
    alpha = new.astype(np.float32)
    assert keep_local(alpha, (previous * 255).astype(np.uint8), [(60.0, 40.0)])
    result = alpha > 0.5
    assert not result[40, 60]  # the correction stays
    assert not result[90, 230]  # the arm far away is gone again
    assert result[170, 80]  # the feet are back
    assert np.array_equal(result, previous & ~_box(50, 20, 70, 60))


def test_a_change_that_reaches_the_mark_is_kept_whole():
    previous = _box(50, 20, 120, 180)
    new = previous | _box(120, 20, 200, 180)  # a positive click at the edge of a missing half: all of it comes back
    alpha = new.astype(np.float32)
    assert not keep_local(alpha, (previous * 255).astype(np.uint8), [(125.0, 100.0)])
    assert np.array_equal(alpha > 0.5, new)


def test_the_restored_region_brings_its_soft_edge_but_not_into_a_kept_change():
    previous = np.zeros((H, W), np.float32)
    previous[80:120, 200:260] = 1.0
    previous[80:120, 198:200] = 0.7  # a soft edge that stays above 0.5 in both mattes
    alpha = np.zeros((H, W), np.float32)
    alpha[80:120, 198:200] = 0.6
    alpha[10:30, 10:30] = 1.0  # the change the mark asked for
    keep_local(alpha, (previous * 255 + 0.5).astype(np.uint8), [(20.0, 20.0)])
    assert alpha[100, 230] == 1.0 and abs(alpha[100, 199] - 0.7) < 0.01  # seam within SEAM_PX restored too
    assert alpha[20, 20] == 1.0 and SEAM_PX >= 2


def test_nothing_to_do():
    previous = (_box(50, 20, 120, 180) * 255).astype(np.uint8)
    same = (previous > 127).astype(np.float32)
    assert not keep_local(same, previous, [(60.0, 40.0)])
    assert not keep_local(same.copy() * 0, previous, [])  # no new mark: nothing is local to anything
    assert reach(1000, 1000) == round(0.02 * np.hypot(1000, 1000)) and reach(10, 10) == 8


def test_growth_only_undoes_far_additions_and_keeps_far_shrinking():
    previous = _box(50, 20, 120, 180)
    new = (previous & ~_box(50, 160, 120, 180)) | _box(200, 80, 260, 100)  # feet lost, an arm gained, both far
    alpha = new.astype(np.float32)
    assert keep_local(alpha, (previous * 255).astype(np.uint8), [(60.0, 40.0)], growth_only=True)
    result = alpha > 0.5
    assert not result[90, 230] and not result[170, 80]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from backend.dfimat.model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


@pytest.mark.parametrize(("mode", "from_round"), [("off", None), ("all", 2), ("late", LATE_ROUND)])
def test_the_engine_keeps_corrections_local_from_the_round_its_setting_names(weights, monkeypatch, mode, from_round):
    import backend.runtime.engine
    from backend.runtime.engine import Engine
    from backend.runtime.options import EngineOptions

    calls = []

    def spy(alpha, previous, marks, growth_only=False):
        calls.append((previous.shape, list(marks), growth_only))
        return True

    monkeypatch.setattr(backend.runtime.engine, "keep_local", spy)
    engine = Engine.load(device="cpu", weights=weights, runtime="torch", options=EngineOptions(
        pose_prior=False, focus=False, take_out_others=False, local_corrections=mode))
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    sid = engine.open(image)
    clicks = [[150.0, 100.0, True], [60.0, 40.0, False], [150.0, 170.0, True], [250.0, 100.0, False],
              [140.0, 60.0, True], [200.0, 150.0, False]]
    for k, click in enumerate(clicks, start=1):
        engine.predict(sid, {"clicks": [click]})
        # The round's matte is kept only when the next round may restore from it.
        kept = engine._sessions[sid].last_alpha is not None
        assert kept == (from_round is not None and k + 1 >= from_round)
    fired = [k + 1 for k, r in enumerate(engine.rules(sid)) if "local_corrections" in r]
    assert fired == ([] if from_round is None else list(range(from_round, len(clicks) + 1)))
    # Each restore compares with the previous round's matte and looks at that round's new marks only.
    assert [m for _, m, _ in calls] == [[tuple(c[:2])] for c in clicks[(from_round or 99) - 1:]]
    assert all(shape == (H, W) and not growth for shape, _, growth in calls)
    engine.reset(sid)  # a reset starts the count again
    engine.predict(sid, {"clicks": [clicks[0]]})
    assert "local_corrections" not in engine.rules(sid)[0]
