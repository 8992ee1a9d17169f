"""Where a new person stands and how tall they are.

Realistic mode uses a flat-ground pinhole model: for a camera at height ``c`` (in units of a person's height) with
its horizon at row ``y_h``, a person whose feet touch the ground at row ``y_f`` is ``(y_f - y_h) / c`` pixels tall.
One visible standing person fixes ``y_h = y_f0 - c * h0``; ``c`` itself is not observable from one person, so it is
drawn from the range of usual photo viewpoints (chest to just above head height).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.synth.errors import SceneError

# Camera height relative to a standing person: chest height (0.7) up to a little above the head (1.05).
CAMERA_HEIGHT_RANGE = (0.7, 1.05)
# Adults differ by roughly +-8 % in height; wider spread makes pasted people look like children or giants.
HEIGHT_SPREAD = (0.92, 1.08)
MIN_STANDING_ASPECT = 1.6


@dataclass(frozen=True)
class PersonBox:
    """Bounding box of a (whole, unoccluded) person in image pixels; ``y1`` is the foot row (exclusive)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def foot_y(self) -> float:
        return self.y1


def box_of_mask(mask: np.ndarray) -> PersonBox:
    """Bounding box of a boolean mask; raises ``SceneError`` for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise SceneError("the mask has no person pixels")
    return PersonBox(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def is_standing_reference(box: PersonBox, image_h: int, image_w: int, min_height_frac: float = 0.15) -> bool:
    """Can this person fix the ground line? Feet visible, upright silhouette, not tiny, not cut at the sides."""
    return (
        box.y1 <= image_h - 3
        and box.x0 >= 1
        and box.x1 <= image_w - 1
        and box.height >= MIN_STANDING_ASPECT * box.width
        and box.height >= min_height_frac * image_h
    )


@dataclass(frozen=True)
class GroundModel:
    """Flat ground seen from a level camera: height of a standing person as a function of their foot row."""

    horizon_y: float
    camera_height: float
    image_h: int
    image_w: int

    def height_at(self, foot_y: float) -> float:
        return max(0.0, (foot_y - self.horizon_y) / self.camera_height)

    def foot_for_height(self, height: float) -> float:
        return self.horizon_y + height * self.camera_height

    @classmethod
    def from_people(
        cls, people: Sequence[PersonBox], image_h: int, image_w: int, camera_height: float
    ) -> GroundModel:
        """Ground model consistent with the given standing people (median horizon over them)."""
        if not people:
            raise SceneError("no standing person to estimate the ground line from")
        horizons = [p.foot_y - camera_height * p.height for p in people]
        return cls(float(np.median(horizons)), camera_height, image_h, image_w)


def sample_realistic_box(
    ground: GroundModel,
    others: Sequence[PersonBox],
    aspect: float,
    rng: np.random.Generator,
    min_height_frac: float = 0.18,
) -> PersonBox | None:
    """Propose a box for a new person: feet on the ground band, height from perspective, next to someone.

    Most proposals put the feet near an existing person's depth and the body beside them (groups stand together);
    the rest spread over the whole visible ground. Returns ``None`` when the proposal cannot fit the frame.
    ``aspect`` is the cutout's width / height.
    """
    h_img, w_img = ground.image_h, ground.image_w
    min_h = min_height_frac * h_img
    # Feet may leave the frame a little (shins cut by the bottom edge are common in photos), heads may not.
    foot_lo = ground.foot_for_height(min_h)
    foot_hi = h_img + 0.08 * ground.height_at(h_img)
    if foot_hi <= foot_lo:
        return None
    if others and rng.random() < 0.75:
        ref = others[int(rng.integers(len(others)))]
        foot = ref.foot_y + rng.normal(0.0, 0.1) * ref.height
    else:
        foot = rng.uniform(foot_lo, foot_hi)
        ref = None
    foot = float(np.clip(foot, foot_lo, foot_hi))
    height = ground.height_at(foot) * rng.uniform(*HEIGHT_SPREAD)
    width = height * aspect
    if ref is not None:
        side = 1.0 if rng.random() < 0.5 else -1.0
        # Centre-to-centre distance in units of the mean width: < 1 overlaps, ~1 shoulder to shoulder.
        gap = rng.uniform(0.45, 1.4) * (ref.width + width) / 2
        cx = ref.cx + side * gap
    else:
        cx = rng.uniform(0.0, w_img)
    box = PersonBox(cx - width / 2, foot - height, cx + width / 2, foot)
    return box if box.y0 >= 0 else None


def sample_random_box(
    image_h: int,
    image_w: int,
    aspect: float,
    rng: np.random.Generator,
    height_range: tuple[float, float] = (0.25, 0.95),
) -> PersonBox:
    """HIM-style placement: uniform scale and a uniform position that keeps the person mostly inside the frame."""
    height = rng.uniform(*height_range) * image_h
    width = height * aspect
    x0 = rng.uniform(-0.25 * width, image_w - 0.75 * width)
    y0 = rng.uniform(0.0, max(0.0, image_h - 0.8 * height))
    return PersonBox(x0, y0, x0 + width, y0 + height)


def frame_fraction(box: PersonBox, image_h: int, image_w: int) -> float:
    """Fraction of the box area inside the frame."""
    ix = max(0.0, min(box.x1, image_w) - max(box.x0, 0.0))
    iy = max(0.0, min(box.y1, image_h) - max(box.y0, 0.0))
    area = box.width * box.height
    return ix * iy / area if area > 0 else 0.0
