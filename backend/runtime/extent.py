"""The rectangle a boolean mask's pixels span: several rules work within it instead of on the whole photo."""

from __future__ import annotations

import numpy as np


def mask_rect(mask: np.ndarray, pad: int = 0) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), end-exclusive, of the True pixels of ``mask`` grown by ``pad`` and kept within the mask's
    frame; None when no pixel is True."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    h, w = mask.shape[:2]
    return (max(0, int(cols[0]) - pad), max(0, int(rows[0]) - pad), min(w, int(cols[-1]) + pad + 1),
            min(h, int(rows[-1]) + pad + 1))
