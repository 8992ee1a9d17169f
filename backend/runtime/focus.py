"""Focus pass geometry: where to look again at higher resolution, and how prompts map into that region.

The whole-image pass sees the photo letterboxed to S px, so a person covering a tenth of a 4000 px photo gets only a
few cells of the S/4 mask grid. The focus pass crops the original image around the target (user box and positive marks;
the coarse mask when there is no box), letterboxes that crop to the same S px square and runs the ISCN again there. This module holds
the pure geometry; `backend.runtime.engine` does the running and caching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.dfimat.encoder import Letterbox

# Margin around the target's extent, as a fraction of its longer side on each side: the ISCN was trained on whole
# photos where the person has context around them, and the MRN adds its own 15 % on top.
FOCUS_MARGIN = 0.3
# Only focus when it magnifies by at least 1 / 0.7 ~ 1.4x; below that the second pass costs time for little detail.
FOCUS_MAX_FRACTION = 0.7
# Regions are snapped outwards to this fraction of the image's longer side, so small changes of the coarse mask
# between rounds give the same region and the cached crop encoding is reused.
FOCUS_SNAP = 1 / 32
PROB_THRESHOLD = 0.5
# A later round keeps the region it focused on while the target still fits it with half the usual margin, and the
# held region is at most this much longer-sided than a fresh one would be (so it still magnifies): the coarse mask's
# extent moves a little every round, and a new region re-frames the whole focused answer (`held_region`).
HOLD_MARGIN = FOCUS_MARGIN / 2
HOLD_MAX_GROWTH = 1.5
# Crop encodings kept per session: ~1.7 MB each at S = 384, and rounds on one target reuse the same region.
FOCUS_CACHE = 4


@dataclass(frozen=True)
class RegionBox(Letterbox):
    """A Letterbox over the image crop (x0, y0) + (width x height): maps full-image pixel coordinates into the crop's
    model square, so `build_prompt_tensors` can transform the whole prompt history without copying it."""

    x0: int = 0
    y0: int = 0

    @property
    def region(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x0 + self.width, self.y0 + self.height

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        offset = np.array([self.x0, self.y0], np.float32)
        return (np.asarray(xy, dtype=np.float32) - offset) * self.scale

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        offset = np.array([self.x0, self.y0], np.float32)
        return np.asarray(xy, dtype=np.float32) / self.scale + offset


def target_extent(history, coarse: np.ndarray | None, lb: Letterbox) -> np.ndarray | None:
    """Bounding box (x0, y0, x1, y1, image px) of the user's box and positive clicks/scribbles; the coarse mask
    (prob > 0.5) joins only when there is no box (and not at all when it is None).

    Why not always the coarse mask too: on the held-out multi-person photos the whole-image mask of a small target
    often spills onto a neighbour, which both shrinks the magnification and pulls the neighbour into the crop
    (coco128-persons, margin 0.3: IoU 0.637 -> 0.637 and right person 93 -> 92 % with it, 0.658 and 95 % without;
    docs/experiments.md, "Focus pass and input size"). The margin still leaves room for a box that cuts a limb off."""
    xs: list[float] = []
    ys: list[float] = []
    if history.box is not None:
        b = history.box
        xs += [b.x0, b.x1]
        ys += [b.y0, b.y1]
    for c in history.clicks:
        if c.positive:
            xs.append(c.x)
            ys.append(c.y)
    for s in history.scribbles:
        if s.positive:
            pts = np.asarray(s.points, np.float32).reshape(-1, 2)
            xs += pts[:, 0].tolist()
            ys += pts[:, 1].tolist()
    fg = None if coarse is None or history.box is not None else coarse > PROB_THRESHOLD
    if fg is not None and fg.any():
        gy, gx = np.nonzero(fg)
        cell = lb.size / coarse.shape[0] / lb.scale  # one grid cell in image px
        xs += [gx.min() * cell, (gx.max() + 1) * cell]
        ys += [gy.min() * cell, (gy.max() + 1) * cell]
    if not xs:
        return None
    box = np.array([min(xs), min(ys), max(xs), max(ys)], np.float64)
    box[[0, 2]] = np.clip(box[[0, 2]], 0, lb.width)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, lb.height)
    return box


def select_region(extent: np.ndarray | None, height: int, width: int, margin: float = FOCUS_MARGIN,
                  max_fraction: float = FOCUS_MAX_FRACTION) -> tuple[int, int, int, int] | None:
    """Square-ish region around `extent` (grown by `margin` of its longer side each side, snapped, clipped), or None
    when focusing would not magnify enough (region's longer side >= max_fraction of the image's longer side)."""
    if extent is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in extent)
    side = max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin)
    long_side = max(height, width)
    if side >= max_fraction * long_side:
        return None
    # Square around the centre (the letterbox then uses the whole model square), shifted back inside the image.
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx0, rx1 = _fit(cx - side / 2, cx + side / 2, width)
    ry0, ry1 = _fit(cy - side / 2, cy + side / 2, height)
    snap = max(8, int(round(long_side * FOCUS_SNAP)))
    rx0, ry0 = int(np.floor(rx0 / snap)) * snap, int(np.floor(ry0 / snap)) * snap
    rx1, ry1 = min(width, int(np.ceil(rx1 / snap)) * snap), min(height, int(np.ceil(ry1 / snap)) * snap)
    if max(rx1 - rx0, ry1 - ry0) >= max_fraction * long_side or rx1 - rx0 < 2 or ry1 - ry0 < 2:
        return None
    return rx0, ry0, rx1, ry1


def held_region(previous: tuple[int, int, int, int], extent: np.ndarray | None,
                fresh: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The region a corrective round focuses on: ``previous`` (last round's) while ``extent`` fits in it with
    `HOLD_MARGIN` of the extent's longer side to spare on every side and it is at most `HOLD_MAX_GROWTH` times
    ``fresh``'s longer side; else ``fresh``.

    Why: in sessions without a box the region follows the coarse mask, which changes every round; a moved region
    re-frames the whole focused answer, and far parts of the matte change with it. Small people, where the focus pass
    runs, lost > 0.02 IoU in 9.5 % of corrective click rounds (docs/experiments.md, "People networks")."""
    if extent is None:
        return fresh
    px0, py0, px1, py1 = previous
    fresh_side = max(fresh[2] - fresh[0], fresh[3] - fresh[1])
    return previous if _fits(previous, extent) and max(px1 - px0, py1 - py0) <= HOLD_MAX_GROWTH * fresh_side else fresh


def stay_region(previous: tuple[int, int, int, int], marks: np.ndarray | None) -> tuple[int, int, int, int] | None:
    """The region a corrective round keeps focusing on when a fresh one would not magnify (`select_region` gave
    None): ``previous`` (last round's) while ``marks`` (the extent of the box and positive marks alone, without the
    coarse mask) fits in it with `HOLD_MARGIN` of its longer side to spare; else None (the whole-image answer).

    Why: without a box the extent takes in the whole-image coarse mask, and on a small person in a crowd that mask can
    spill over the whole foreground; the region then grows past `FOCUS_MAX_FRACTION` and the round falls back to that
    whole-image answer. On the held-out photos, rounds 2-5 that switched the focus off this way lost 0.17 IoU on
    average (a session that began with a weak box: 0.55 -> 0.02), while the user's marks were still where they had been."""
    return previous if marks is not None and _fits(previous, marks) else None


def _fits(region: tuple[int, int, int, int], extent: np.ndarray) -> bool:
    """``extent`` lies inside ``region`` with `HOLD_MARGIN` of its longer side to spare on every side."""
    px0, py0, px1, py1 = region
    x0, y0, x1, y1 = (float(v) for v in extent)
    m = HOLD_MARGIN * max(x1 - x0, y1 - y0)
    return px0 <= x0 - m and py0 <= y0 - m and px1 >= x1 + m and py1 >= y1 + m


def _fit(a: float, b: float, limit: int) -> tuple[float, float]:
    """Shift [a, b] into [0, limit] keeping its length where possible."""
    if a < 0:
        a, b = 0.0, b - a
    if b > limit:
        a, b = max(0.0, a - (b - limit)), float(limit)
    return a, b


def region_box(region: tuple[int, int, int, int], size: int) -> RegionBox:
    x0, y0, x1, y1 = region
    return RegionBox(height=y1 - y0, width=x1 - x0, size=size, x0=x0, y0=y0)


def full_to_region_grid(prev: np.ndarray, lb: Letterbox, rb: RegionBox) -> np.ndarray:
    """A whole-image square-grid map (G x G) resampled onto the region's square grid (zero in the padding)."""
    g = prev.shape[0]
    factor = g / rb.size
    ih, iw = rb.inner
    gh, gw = max(1, round(ih * factor)), max(1, round(iw * factor))
    out = np.zeros((g, g), np.float32)
    out[:gh, :gw] = lb.square_to_crop(prev, rb.region, (gh, gw))
    return out
