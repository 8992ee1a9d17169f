
import cv2
import numpy as np
import pytest

from backend.train.pseudo_alpha import default_band, pseudo_alpha, trimap_from_mask


def soft_disc(size=320, radius=100, blur=4.0):
    """An image whose true alpha is a blurred disc: red person over a green-blue background."""
    yy, xx = np.mgrid[:size, :size]
    true_alpha = cv2.GaussianBlur(((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2).astype(np.float64),
                                  (0, 0), blur)
    fg = np.array([220.0, 40.0, 30.0])
    bg = np.array([30.0, 150.0, 200.0])
    image = true_alpha[..., None] * fg + (1 - true_alpha[..., None]) * bg
    return np.clip(image, 0, 255).astype(np.uint8), true_alpha


def test_trimap_band():
    mask = np.zeros((100, 100), bool)
    mask[20:80, 20:80] = True
    tri = trimap_from_mask(mask, 5)
    assert tri[50, 50] == 1 and tri[2, 2] == 0 and tri[20, 50] == 0.5 and tri[17, 50] == 0.5
    thin = np.zeros((100, 100), bool)
    thin[10:90, 48:52] = True
    assert (trimap_from_mask(thin, 10) == 1).any()  # a thin limb keeps a certain core


def test_pseudo_alpha_certain_far_from_edge_soft_only_in_band():
    image, true_alpha = soft_disc()
    mask = true_alpha >= 0.5
    band = 8
    alpha = pseudo_alpha(image, mask, band=band)
    assert alpha.dtype == np.float32 and alpha.shape == mask.shape
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    assert np.all(alpha[inside > band + 1] == 1.0)
    assert np.all(alpha[outside > band + 1] == 0.0)
    soft = (alpha > 0.02) & (alpha < 0.98)
    assert soft.any() and np.all((inside[soft] <= band + 1) & (outside[soft] <= band + 1))
    # It follows the image: closer to the real soft edge than the binary mask is.
    err_pseudo = np.abs(alpha - true_alpha).sum()
    err_binary = np.abs(mask.astype(float) - true_alpha).sum()
    assert err_pseudo < 0.7 * err_binary, (err_pseudo, err_binary)


def test_large_images_are_matted_whole():
    # Speed is measured by hand (benchmarks/), not asserted here: a timed test fails on a loaded machine.
    big, big_alpha = soft_disc(size=1200, radius=400, blur=10)
    alpha = pseudo_alpha(big, big_alpha >= 0.5)
    assert alpha.shape == big_alpha.shape
    assert alpha[600, 600] == 1 and alpha[5, 5] == 0


def test_default_band_scales_with_person():
    small = np.zeros((500, 500), bool)
    small[10:50, 10:30] = True
    large = np.zeros((500, 500), bool)
    large[10:490, 100:300] = True
    assert default_band(small) == 3 and default_band(large) == 12


def test_bad_input():
    image, true_alpha = soft_disc(size=64, radius=20)
    with pytest.raises(ValueError, match="empty"):
        pseudo_alpha(image, np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="differ"):
        pseudo_alpha(image, np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="uint8"):
        pseudo_alpha(image.astype(np.float32), true_alpha > 0.5)
    with pytest.raises(ValueError, match="band"):
        pseudo_alpha(image, true_alpha > 0.5, band=-1)
    assert np.all(pseudo_alpha(image, np.ones((64, 64), bool)) == 1.0)
