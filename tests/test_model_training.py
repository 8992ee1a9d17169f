"""Training helpers: MRN targets and coarse-mask degradation, crop boxes, collages."""

import numpy as np

from backend.train_cache import IGNORE, _collage
from backend.train_mrn import _crop_box, degrade, label_consistent


def test_label_consistent_alpha_keeps_the_labelled_edge_and_the_soft_values():
    mask = np.zeros((4, 6), bool)
    mask[:, :3] = True
    alpha = np.array([[1.0, 0.9, 0.3, 0.7, 0.1, 0.0]] * 4, np.float32)
    out = label_consistent(alpha, mask)
    assert np.array_equal((out >= 0.5), mask | (out == 0.5))
    assert np.allclose(out[0], [1.0, 0.9, 0.5, 0.5, 0.1, 0.0])


def test_degraded_masks_are_soft_in_range_and_near_the_original():
    rng = np.random.default_rng(0)
    mask = np.zeros((96, 96), np.uint8)
    mask[20:80, 30:60] = 1
    for _ in range(5):
        m = degrade(mask, rng)
        assert m.shape == mask.shape and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 1.0
        inter = ((m > 0.5) & (mask > 0)).sum()
        assert inter / max(1, ((m > 0.5) | (mask > 0)).sum()) > 0.4


def test_crop_box_grows_the_bbox_and_stays_inside():
    mask = np.zeros((50, 100), bool)
    mask[10:20, 40:60] = True
    assert _crop_box(mask, 0.5) == (30, 5, 70, 25)
    mask[:, 95:] = True
    x0, y0, x1, y1 = _crop_box(mask, 0.5)
    assert (x0, y0) >= (0, 0) and (x1, y1) == (100, 50)


def test_collage_gives_each_person_its_own_label():
    rng = np.random.default_rng(0)
    parts = []
    for k in range(3):
        img = np.full((40, 20, 3), 50 * k, np.uint8)
        lab = np.zeros((40, 20), np.uint8)
        lab[5:35, 5:15] = 1
        lab[0, 0] = IGNORE
        parts.append((img, lab))
    img, lab = _collage(parts, 96, rng)
    assert img.shape == (96, 96, 3) and lab.shape == (96, 96)
    values = set(np.unique(lab).tolist())
    assert {1, 2, 3} <= values and values <= {0, 1, 2, 3, IGNORE}
    xs = [np.nonzero(lab == k)[1].mean() for k in (1, 2, 3)]
    assert xs == sorted(xs)  # left to right in the order given
