
import numpy as np
import pytest

from backend.data.simulate import (
    CLICKS_PER_ROUND,
    SCRIBBLES_PER_ROUND,
    SimulationError,
    box_from_mask,
    first_clicks,
    first_scribbles,
    most_significant_error,
    next_clicks,
    next_scribbles,
    simulate_first_round,
    simulate_next_round,
)
from backend.dfimat.prompts import Box, RoundPrompts


def rng(seed=0):
    return np.random.default_rng(seed)


def pix(click):
    return int(click.y), int(click.x)


def body():
    """A 41x41 square (DT peak at its centre (40, 30)) with a long thin arm."""
    m = np.zeros((100, 120), bool)
    m[20:61, 10:51] = True
    m[38:42, 51:110] = True
    return m


def test_box_is_tight_in_pixel_edges():
    assert box_from_mask(body()) == Box(10, 20, 110, 61)
    jittered = box_from_mask(body(), rng(), jitter=0.1)
    assert jittered != Box(10, 20, 110, 61)
    assert 0 <= jittered.x0 < jittered.x1 <= 120 and 0 <= jittered.y0 < jittered.y1 <= 100
    with pytest.raises(SimulationError):
        box_from_mask(body(), None, jitter=0.1)


def test_first_click_at_distance_peak_then_inside():
    clicks = first_clicks(body(), 3, rng())
    assert len(clicks) == 3 and all(c.positive for c in clicks)
    assert pix(clicks[0]) == (40, 30)
    assert all(body()[pix(c)] for c in clicks)


def test_first_scribbles_inside_eroded_mask():
    m = np.zeros((200, 200), bool)
    m[30:170, 60:140] = True
    for s in first_scribbles(m, 4, rng(), width=6.0):
        assert s.positive and s.width == 6.0 and len(s.points) >= 2
        for x, y in s.points:
            assert 63 <= x <= 137 and 33 <= y <= 167  # brush radius 3 stays inside


def test_most_significant_error_picks_larger_kind_and_largest_component():
    gt = np.zeros((60, 60), bool)
    gt[10:50, 10:50] = True
    pred = gt.copy()
    pred[10:30, 10:20] = False   # FN component, 200 px
    pred[40:45, 40:45] = False   # FN component, 25 px
    pred[0:5, 0:30] = True       # FP, 150 px
    region, positive = most_significant_error(gt, pred)
    assert positive and region.sum() == 200 and region[15, 15]
    pred[0:10, 0:60] = True      # FP now 600 px
    region, positive = most_significant_error(gt, pred)
    assert not positive and region[2, 2] and not region[15, 15]
    assert most_significant_error(gt, gt) == (None, True)
    with pytest.raises(SimulationError, match="shape"):
        most_significant_error(gt, gt[:10])


def test_next_click_lands_at_peak_of_largest_fn_component():
    gt = np.zeros((80, 80), bool)
    gt[10:70, 10:70] = True
    pred = gt.copy()
    pred[20:41, 20:41] = False   # 21x21 hole: peak at its centre (30, 30)
    pred[60:64, 60:64] = False   # small hole
    clicks = next_clicks(gt, pred.astype(np.float32), 1, rng())
    assert len(clicks) == 1 and clicks[0].positive and pix(clicks[0]) == (30, 30)


def test_false_positive_gives_negative_click_and_later_clicks_move_on():
    gt = np.zeros((80, 120), bool)
    gt[10:70, 10:40] = True
    pred = gt.copy()
    pred[10:70, 60:110] = True   # a neighbour wrongly included
    clicks = next_clicks(gt, pred, 3, rng())
    assert len(clicks) == 3 and not any(c.positive for c in clicks)
    assert all(pred[pix(c)] and not gt[pix(c)] for c in clicks)
    assert len({pix(c) for c in clicks}) == 3
    first = pix(clicks[0])
    assert all(abs(pix(c)[0] - first[0]) + abs(pix(c)[1] - first[1]) > 10 for c in clicks[1:])


def test_ignore_pixels_are_never_errors():
    gt = np.zeros((40, 40), bool)
    pred = np.zeros((40, 40), bool)
    pred[5:15, 5:15] = True
    ignore = pred.copy()
    assert next_clicks(gt, pred, 3, rng(), ignore=ignore) == []


def test_next_scribbles_inside_error_with_right_sign():
    gt = np.zeros((100, 100), bool)
    gt[10:90, 10:90] = True
    pred = np.zeros_like(gt)
    pred[10:90, 10:50] = True
    strokes = next_scribbles(gt, pred, 2, rng())
    assert len(strokes) == 2 and all(s.positive for s in strokes)
    for s in strokes:
        for x, y in s.points:
            assert gt[int(y), int(x)] and not pred[int(y), int(x)]


def test_rounds_per_mode():
    gt = body()
    assert simulate_first_round("box", gt, rng()).box is not None
    assert len(simulate_first_round("clicks", gt, rng()).clicks) == CLICKS_PER_ROUND
    assert len(simulate_first_round("scribbles", gt, rng()).scribbles) == SCRIBBLES_PER_ROUND
    assert simulate_first_round("text", gt, rng(), text="the person").text == "the person"
    for seed in range(6):
        mixed = simulate_first_round("mixed", gt, rng(seed), text="the person")
        assert mixed.text == "the person" and (mixed.box or mixed.clicks or mixed.scribbles)
    empty_pred = np.zeros_like(gt, dtype=np.float32)
    nxt = simulate_next_round("clicks", gt, empty_pred, rng())
    assert len(nxt.clicks) == CLICKS_PER_ROUND and all(c.positive for c in nxt.clicks)
    assert len(simulate_next_round("scribbles", gt, empty_pred, rng()).scribbles) == SCRIBBLES_PER_ROUND
    kinds = {bool(simulate_next_round("mixed", gt, empty_pred, rng(s)).clicks) for s in range(10)}
    assert kinds == {True, False}
    assert simulate_next_round("clicks", gt, gt, rng()) == RoundPrompts()


def test_errors():
    with pytest.raises(SimulationError, match="empty"):
        simulate_first_round("box", np.zeros((5, 5), bool), rng())
    with pytest.raises(SimulationError, match="unknown mode"):
        simulate_first_round("lasso", body(), rng())
    with pytest.raises(SimulationError, match="text"):
        simulate_first_round("text", body(), rng())
    with pytest.raises(SimulationError, match="single round"):
        simulate_next_round("box", body(), body(), rng())
    with pytest.raises(SimulationError, match="2-D"):
        first_clicks(np.ones((3, 3, 3)), 1, rng())


def test_same_seed_same_prompts():
    gt = body()
    assert simulate_first_round("scribbles", gt, rng(5)) == simulate_first_round("scribbles", gt, rng(5))
    assert simulate_first_round("clicks", gt, rng(5)) == simulate_first_round("clicks", gt, rng(5))


def test_one_megapixel_rounds_place_marks_on_the_error():
    # Speed is benchmarked by hand, not asserted: a timed test fails on a loaded machine.
    gt = np.zeros((1000, 1000), bool)
    gt[100:900, 300:700] = True
    pred = np.zeros_like(gt)
    pred[150:800, 320:760] = True
    for mode in ("clicks", "scribbles"):
        assert not simulate_first_round(mode, gt, rng()).is_empty()
        assert not simulate_next_round(mode, gt, pred, rng()).is_empty()
    for click in simulate_next_round("clicks", gt, pred, rng()).clicks:
        # A positive click lands on missed person, a negative one on wrongly taken background.
        assert gt[int(click.y), int(click.x)] == click.positive != pred[int(click.y), int(click.x)]


def test_training_loose_box_only_grows_and_stays_in_the_image():
    from backend.train.iscn import LOOSE_BOX_MAX, loose_box

    rng = np.random.default_rng(1)
    tight = Box(100.0, 50.0, 200.0, 250.0)
    for _ in range(50):
        b = loose_box(tight, (300, 220), rng)
        assert b.x0 <= tight.x0 and b.y0 <= tight.y0 and b.x1 >= tight.x1 and b.y1 >= tight.y1
        assert b.x0 >= tight.x0 - LOOSE_BOX_MAX * 100 and b.y1 <= 300 and b.x1 <= 220
