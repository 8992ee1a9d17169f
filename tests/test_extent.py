"""A mask's rectangle (backend.runtime.extent)."""

from __future__ import annotations

import numpy as np

from backend.runtime.extent import mask_rect


def test_a_masks_rectangle_grows_within_its_frame_and_an_empty_mask_has_none():
    m = np.zeros((10, 20), bool)
    assert mask_rect(m) is None
    m[3:5, 0:4] = True
    assert mask_rect(m) == (0, 3, 4, 5)
    assert mask_rect(m, 2) == (0, 1, 6, 7)  # not beyond the left edge
    m[9, 19] = True
    assert mask_rect(m, 3) == (0, 0, 20, 10)
