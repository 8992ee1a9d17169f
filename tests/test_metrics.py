import numpy as np
import pytest

from backend.eval.metrics import (
    VS_BINARY_NOTE,
    _gauss_grad_kernels,
    boundary_f,
    conn,
    error_split,
    grad,
    iou,
    leak,
    matting_vs_binary,
    mse,
    noc,
    person_scores,
    sad,
)


def square(shape, r0, r1, c0, c1, value=1.0):
    m = np.zeros(shape)
    m[r0:r1, c0:c1] = value
    return m


def test_iou_hand_made_and_ignore():
    gt = square((40, 40), 0, 10, 0, 10)
    pred = square((40, 40), 0, 10, 5, 15)
    assert iou(pred, gt) == pytest.approx(50 / 150)
    ignore = square((40, 40), 0, 10, 10, 15).astype(bool)
    assert iou(pred, gt, ignore) == pytest.approx(50 / 100)
    assert iou(np.zeros((5, 5)), np.zeros((5, 5))) == 1.0
    assert iou(pred * 0.49, gt) == 0.0


def test_boundary_f_tolerance():
    gt = square((60, 60), 10, 40, 10, 40)
    assert boundary_f(gt, gt) == 1.0
    assert boundary_f(square((60, 60), 10, 40, 12, 42), gt) == 1.0  # 2 px off: within 3 px
    far = boundary_f(square((60, 60), 10, 40, 18, 48), gt)
    assert 0.2 < far < 0.8
    assert boundary_f(np.zeros((60, 60)), gt) == 0.0
    # A person cut by the frame has no edge along it.
    full = np.ones((20, 20))
    assert boundary_f(full, full) == 1.0


def test_leak():
    target = square((20, 20), 0, 10, 0, 10).astype(bool)       # 100 px
    others = square((20, 20), 12, 20, 0, 5).astype(bool)       # 40 px
    alpha = target * 1.0 + others * 0.5
    assert leak(alpha, others, target) == pytest.approx(0.2)
    assert leak(target * 1.0, others, target) == 0.0
    with pytest.raises(ValueError, match="empty"):
        leak(alpha, others, np.zeros((20, 20), bool))


def test_error_split_sorts_every_wrong_pixel_and_sums_with_iou_to_one():
    # Full-height shapes: the frame is no outline (as in boundary_f), so the strips have no corners to count.
    gt = square((100, 100), 0, 100, 20, 50)                        # the target, 3000 px
    others = square((100, 100), 0, 100, 75, 95).astype(bool)       # a neighbour, 25 px to its right
    pred = square((100, 100), 0, 100, 22, 50)                      # 2 px short on the left: outline
    pred[:, 50:56] = 1                                             # 6 px too wide on the right: shape
    pred[40:60, 24:32] = 0                                         # a hole a few px in from the left: shape
    pred[:, 85:95] = 1                                             # half the neighbour, far from any outline: others
    pred[0:5, 96:100] = 1                                          # something far away, nobody's: rest
    split = error_split(pred, gt, others)
    union = 3000 + 600 + 1000 + 20
    # The 6 px strip is no outline error anywhere: each of its pixels is > 3 px from one of the two outlines.
    assert split["outline"] == pytest.approx(200 / union)
    assert split["shape"] == pytest.approx((600 + 160) / union)
    assert split["others"] == pytest.approx(1000 / union)
    assert split["rest"] == pytest.approx(20 / union)
    assert iou(pred, gt) + sum(split.values()) == pytest.approx(1.0)
    # A neighbour taken in right next to the target is an outline error, not a selection error.
    touching = square((100, 100), 0, 100, 50, 70).astype(bool)
    assert error_split(square((100, 100), 0, 100, 20, 52), gt, touching) == pytest.approx(
        {"outline": 200 / 3200, "shape": 0.0, "others": 0.0, "rest": 0.0})
    # A person missed altogether: the miss is a selection error all over, none of it "outline".
    assert error_split(np.zeros((100, 100)), gt, others) == {"outline": 0.0, "shape": 0.0, "others": 0.0, "rest": 1.0}
    # Ignore pixels count nowhere; nothing predicted and nothing labelled is no error.
    ignore = np.zeros((100, 100), bool)
    ignore[0:5, 96:100] = True
    assert error_split(pred, gt, others, ignore)["rest"] == 0.0
    assert error_split(np.zeros((9, 9)), np.zeros((9, 9)), np.zeros((9, 9), bool)) == dict.fromkeys(
        ("outline", "shape", "others", "rest"), 0.0)
    with pytest.raises(ValueError, match="others mask"):
        error_split(pred, gt, np.zeros((5, 5), bool))


def test_sad_mse_whole_image_with_ignore():
    gt = square((20, 20), 0, 10, 0, 10)
    alpha = gt * 0.5
    assert sad(alpha, gt) == pytest.approx(100 * 0.5 / 1000)
    assert mse(alpha, gt) == pytest.approx(100 * 0.25 / 400)
    ignore = square((20, 20), 0, 5, 0, 10).astype(bool)
    assert sad(alpha, gt, ignore) == pytest.approx(50 * 0.5 / 1000)
    assert mse(alpha, gt, ignore) == pytest.approx(50 * 0.25 / 350)


def test_grad_kernel_and_step_edge():
    kx, ky = _gauss_grad_kernels(1.4)
    assert kx.shape == (9, 9) and np.allclose(ky, kx.T) and np.isclose((kx**2).sum(), 1.0)
    h, w = 30, 40
    step = square((h, w), 0, h, 20, w)
    assert grad(step, step) == 0.0
    assert grad(step, np.full((h, w), 0.3)) == pytest.approx(grad(step, np.zeros((h, w))))  # constant: no gradient
    # Per row, a unit step filtered by the x kernel leaves the running sums of its column profile.
    profile = kx.sum(axis=0)
    expected = h * float((np.cumsum(profile)[:-1] ** 2).sum()) / 1000
    assert grad(step, np.zeros((h, w))) == pytest.approx(expected, rel=1e-9)


def test_conn_counts_the_foreground_component_not_the_background():
    gt = square((50, 50), 5, 25, 5, 25) + square((50, 50), 40, 43, 40, 43)
    pred = gt * 0.9
    # Big square: connected up to 0.9, so d_p = 0 and d_g = 0.1 < 0.15: no error. Small square: not the largest
    # component, dropped at 0.1, so phi_p = 1 - 0.9 and phi_g = 0: 0.1 per pixel on 9 pixels.
    assert conn(pred, gt) == pytest.approx(9 * 0.1 / 1000)
    # Counting the background as a component (the GCA port's bug) would give (400 + 9) * 0.1 / 1000.
    assert conn(gt, gt) == 0.0


def test_conn_partial_alpha():
    gt = square((20, 20), 0, 10, 0, 10)
    pred = gt * 0.5
    # Connected up to 0.5 -> level 0.5: phi_p = 1, d_g = 0.5 -> phi_g = 0.5 on 100 px.
    assert conn(pred, gt) == pytest.approx(100 * 0.5 / 1000)


def test_noc():
    assert noc([0.5, 0.86, 0.91], 0.85) == 2
    assert noc([0.5, 0.86, 0.91], 0.90) == 3
    assert noc([0.5, 0.6], 0.90, max_clicks=20) == 20
    assert noc([0.95] * 3, 0.9) == 1


def test_bundles_are_flagged_and_bad_input():
    gt = square((20, 20), 0, 10, 0, 10)
    m = matting_vs_binary(gt * 0.8, gt)
    assert m["reference"] == VS_BINARY_NOTE and "binary" in VS_BINARY_NOTE
    s = person_scores(gt, gt, others=np.zeros((20, 20), bool))
    assert s["iou"] == 1.0 and s["boundary_f"] == 1.0 and s["leak"] == 0.0 and s["sad"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        iou(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        sad(np.full((3, 3), np.nan), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="ignore"):
        iou(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((2, 2), bool))


def test_grad_matches_scipy_nearest_convolution():
    from scipy import ndimage

    from backend.eval.metrics import _grad_mag

    rng = np.random.default_rng(1)
    image = rng.random((25, 31))
    kx, ky = _gauss_grad_kernels(1.4)
    ref = np.sqrt(ndimage.convolve(image, kx, mode="nearest") ** 2 + ndimage.convolve(image, ky, mode="nearest") ** 2)
    assert np.allclose(_grad_mag(image, 1.4), ref, atol=1e-12)
