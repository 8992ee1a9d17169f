"""Simulated users: prompts derived from a ground-truth mask and the previous prediction (paper Sec. 5.2).

Rules (the paper's, gaps filled per ``dfimat-reference.md`` §4):

* clicks / scribbles: 5 rounds, 3 clicks or 2 scribbles per round. Round 1 is drawn from the ground truth
  (first click at the mask's distance-transform peak, the others random inside; scribbles are smooth curves inside
  the eroded mask). Later rounds go to the *most significant error*: the larger (in pixels) of the false-negative
  and false-positive maps, its largest connected component; a click lands at that component's distance-transform
  peak (positive for FN, negative for FP). After each click the disc it "covers" (radius = its distance to the
  component's edge) is masked out and the rule is applied again, so the next click goes elsewhere.
* box and text: one round from the ground truth.
* mixed: 5 rounds; round 1 = text + one of click / scribble / box, rounds 2-5 click or scribble at random.

Coordinates follow ``backend.dfimat.prompts``: pixel (r, c) has its centre at (c + 0.5, r + 0.5).
Every function takes a ``numpy.random.Generator`` so a seed reproduces the same prompts for every method.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from backend.dfimat.prompts import Box, Click, RoundPrompts, Scribble

__all__ = [
    "SimulationError",
    "MODES",
    "CLICKS_PER_ROUND",
    "SCRIBBLES_PER_ROUND",
    "ROUNDS",
    "box_from_mask",
    "first_clicks",
    "first_scribbles",
    "most_significant_error",
    "next_clicks",
    "next_scribbles",
    "simulate_first_round",
    "simulate_next_round",
]

MODES = ("box", "clicks", "scribbles", "text", "mixed")
CLICKS_PER_ROUND = 3
SCRIBBLES_PER_ROUND = 2
ROUNDS = {"box": 1, "text": 1, "clicks": 5, "scribbles": 5, "mixed": 5}
DEFAULT_SCRIBBLE_WIDTH = 5.0


class SimulationError(ValueError):
    """The simulator cannot make the requested prompt (empty mask, unknown mode, missing text)."""


def _binary(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise SimulationError(f"{what} must be a 2-D mask, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.floating):
        return mask >= 0.5
    return mask > 0


def _nonempty(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    mask = _binary(mask, what)
    if not mask.any():
        raise SimulationError(f"{what} is empty: no pixel to prompt on")
    return mask


def _distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance to the nearest pixel outside ``region``, the image border counting as outside."""
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _peak(region: np.ndarray) -> tuple[int, int, float]:
    """(row, col, distance) of the distance-transform maximum, computed on the region's bounding box only."""
    r0, r1, c0, c1 = _bbox(region)
    crop = region[r0:r1, c0:c1]
    # Everything beyond a tight bounding box is outside the region, so the crop's zero padding is exact.
    dist = _distance(crop)
    flat = int(np.argmax(dist))
    r, c = divmod(flat, dist.shape[1])
    return r0 + r, c0 + c, float(dist[r, c])


def _centre(r: int, c: int) -> tuple[float, float]:
    return c + 0.5, r + 0.5


def box_from_mask(mask: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.0) -> Box:
    """Tight box around ``mask`` in pixel-edge coordinates; ``jitter`` moves each side by up to that fraction
    of the box size (needs ``rng``), clipped to the image."""
    mask = _nonempty(mask)
    r0, r1, c0, c1 = _bbox(mask)
    x0, y0, x1, y1 = float(c0), float(r0), float(c1), float(r1)
    if jitter > 0:
        if rng is None:
            raise SimulationError("box jitter needs an rng")
        w, h = x1 - x0, y1 - y0
        dx0, dx1 = rng.uniform(-jitter, jitter, 2) * w
        dy0, dy1 = rng.uniform(-jitter, jitter, 2) * h
        height, width = mask.shape
        x0 = float(np.clip(x0 + dx0, 0, width - 1))
        y0 = float(np.clip(y0 + dy0, 0, height - 1))
        x1 = float(np.clip(x1 + dx1, x0 + 1, width))
        y1 = float(np.clip(y1 + dy1, y0 + 1, height))
    return Box(x0, y0, x1, y1)


def first_clicks(mask: np.ndarray, n: int, rng: np.random.Generator) -> list[Click]:
    """``n`` positive clicks: the first at the distance-transform peak, the rest random well inside the mask."""
    mask = _nonempty(mask)
    if n <= 0:
        return []
    r, c, peak = _peak(mask)
    clicks = [Click(*_centre(r, c), True)]
    if n == 1:
        return clicks
    dist = _distance(mask)
    # Users click inside the person, not on its outline: keep away from the edge by a fifth of the peak depth.
    rows, cols = np.nonzero(dist >= max(1.0, 0.2 * peak))
    picks = rng.choice(len(rows), size=n - 1, replace=len(rows) < n - 1)
    clicks += [Click(*_centre(int(rows[k]), int(cols[k])), True) for k in picks]
    return clicks


def _curve_in(region: np.ndarray, start: tuple[int, int], length: float, rng: np.random.Generator,
              steps: int = 12) -> list[tuple[float, float]]:
    """A smooth random walk from ``start`` that stays inside ``region`` for up to ``length`` pixels."""
    h, w = region.shape
    step = max(1.0, length / steps)
    y, x = start[0] + 0.5, start[1] + 0.5
    heading = rng.uniform(0, 2 * np.pi)
    turn = 0.0
    points = [(x, y)]
    for _ in range(steps):
        for _attempt in range(6):
            turn = 0.6 * turn + rng.normal(0, 0.35)
            cand = heading + turn
            nx, ny = x + step * np.cos(cand), y + step * np.sin(cand)
            if 0 <= nx < w and 0 <= ny < h and region[int(ny), int(nx)]:
                heading, x, y = cand, nx, ny
                points.append((float(x), float(y)))
                break
            heading += np.pi / 3  # blocked: look further round for a way on
        else:
            break
    return points


def _scribble_in(region: np.ndarray, positive: bool, rng: np.random.Generator, width: float,
                 start: tuple[int, int] | None = None) -> Scribble:
    dist = _distance(region)
    inner = dist >= width / 2 + 1
    if not inner.any():  # thinner than the brush: stay on the medial line
        inner = dist >= 0.5 * dist.max()
    if start is None:
        rows, cols = np.nonzero(inner)
        k = int(rng.integers(len(rows)))
        start = (int(rows[k]), int(cols[k]))
    r0, r1, c0, c1 = _bbox(region)
    length = 0.5 * max(r1 - r0, c1 - c0)
    best: list[tuple[float, float]] = []
    for _ in range(4):  # keep the longest of a few walks: a stroke that dies at once helps nobody
        points = _curve_in(inner, start, length, rng)
        if len(points) > len(best):
            best = points
    if len(best) == 1:
        x, y = best[0]
        best = [(x, y), (x, y)]  # a dab: a one-point stroke still has the brush width
    return Scribble(tuple(best), positive, width)


def first_scribbles(mask: np.ndarray, n: int, rng: np.random.Generator,
                    width: float = DEFAULT_SCRIBBLE_WIDTH) -> list[Scribble]:
    """``n`` positive strokes, smooth curves inside the mask eroded by half the brush width."""
    mask = _nonempty(mask)
    return [_scribble_in(mask, True, rng, width) for _ in range(max(0, n))]


def most_significant_error(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None,
                           exclude: np.ndarray | None = None) -> tuple[np.ndarray | None, bool]:
    """The larger of false negatives / false positives, reduced to its largest connected component.

    Returns ``(region, positive)``: ``positive`` is True for a false-negative region (the user adds it), False for
    a false positive. ``(None, True)`` when there is no error. ``pred`` may be soft (thresholded at 0.5).
    ``ignore`` and ``exclude`` pixels never count as errors.
    """
    gt = _binary(gt, "ground truth")
    pred = _binary(pred, "prediction")
    if gt.shape != pred.shape:
        raise SimulationError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    valid = np.ones_like(gt)
    for extra in (ignore, exclude):
        if extra is not None:
            valid &= ~np.asarray(extra, bool)
    fn = gt & ~pred & valid
    fp = ~gt & pred & valid
    n_fn, n_fp = int(fn.sum()), int(fp.sum())
    if n_fn == 0 and n_fp == 0:
        return None, True
    positive = n_fn >= n_fp
    error = fn if positive else fp
    count, labels, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # label 0 is the background, never a candidate
    return labels == largest, positive


def _covered_disc(shape: tuple[int, int], r: int, c: int, radius: float) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    cv2.circle(out, (c, r), max(2, int(round(radius))), 1, -1)
    return out.astype(bool)


def next_clicks(gt: np.ndarray, pred: np.ndarray, n: int, rng: np.random.Generator,
                ignore: np.ndarray | None = None) -> list[Click]:
    """Up to ``n`` corrective clicks, each at the distance-transform peak of the most significant error left.

    Fewer than ``n`` when the errors run out. ``rng`` is accepted for a uniform signature; the rule is
    deterministic.
    """
    del rng
    gt = _binary(gt, "ground truth")
    covered = np.zeros(gt.shape, bool)
    clicks: list[Click] = []
    for _ in range(max(0, n)):
        region, positive = most_significant_error(gt, pred, ignore, covered)
        if region is None:
            break
        r, c, depth = _peak(region)
        clicks.append(Click(*_centre(r, c), positive))
        covered |= _covered_disc(gt.shape, r, c, depth)
    return clicks


def next_scribbles(gt: np.ndarray, pred: np.ndarray, n: int, rng: np.random.Generator,
                   width: float = DEFAULT_SCRIBBLE_WIDTH, ignore: np.ndarray | None = None) -> list[Scribble]:
    """Up to ``n`` corrective strokes, each starting at the distance-transform peak of the most significant
    error left and wandering inside it; the stroke's footprint is then masked out."""
    gt = _binary(gt, "ground truth")
    covered = np.zeros(gt.shape, bool)
    scribbles: list[Scribble] = []
    for _ in range(max(0, n)):
        region, positive = most_significant_error(gt, pred, ignore, covered)
        if region is None:
            break
        r, c, depth = _peak(region)
        stroke = _scribble_in(region, positive, rng, width, start=(r, c))
        scribbles.append(stroke)
        footprint = np.zeros(gt.shape, np.uint8)
        pts = np.round(np.array(stroke.points) - 0.5).astype(np.int32)
        cv2.polylines(footprint, [pts], False, 1, thickness=max(1, int(round(2 * max(depth, width)))))
        covered |= footprint.astype(bool)
    return scribbles


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise SimulationError(f"unknown mode {mode!r}; choose one of {MODES}")


def simulate_first_round(mode: str, gt: np.ndarray, rng: np.random.Generator,
                         text: str | None = None) -> RoundPrompts:
    """Round 1 of ``mode`` for the target ``gt``. ``text`` is required for mode text; optional for mixed."""
    _check_mode(mode)
    gt = _nonempty(gt, "ground truth")
    if mode == "box":
        return RoundPrompts(box=box_from_mask(gt))
    if mode == "clicks":
        return RoundPrompts(clicks=tuple(first_clicks(gt, CLICKS_PER_ROUND, rng)))
    if mode == "scribbles":
        return RoundPrompts(scribbles=tuple(first_scribbles(gt, SCRIBBLES_PER_ROUND, rng)))
    if mode == "text":
        if text is None:
            raise SimulationError("mode text needs a referring expression")
        return RoundPrompts(text=text)
    visual = ("clicks", "scribbles", "box")[int(rng.integers(3))]
    first = simulate_first_round(visual, gt, rng)
    return RoundPrompts(clicks=first.clicks, scribbles=first.scribbles, box=first.box, text=text)


def simulate_next_round(mode: str, gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator,
                        ignore: np.ndarray | None = None) -> RoundPrompts:
    """A corrective round after prediction ``pred``; empty when nothing is left to correct.

    Box and text are single-round modes in the paper's protocol, so they have no next round.
    """
    _check_mode(mode)
    if mode in ("box", "text"):
        raise SimulationError(f"mode {mode} has a single round; there is no next round")
    if mode == "mixed":
        mode = ("clicks", "scribbles")[int(rng.integers(2))]
    if mode == "clicks":
        return RoundPrompts(clicks=tuple(next_clicks(gt, pred, CLICKS_PER_ROUND, rng, ignore)))
    return RoundPrompts(scribbles=tuple(next_scribbles(gt, pred, SCRIBBLES_PER_ROUND, rng, ignore=ignore)))


# `found_others`: how the people finder's view of the other people differs from their labels (chosen to cover what the
# networks' finder does on validation composites, not fitted): a missed person, masks short of or beyond the outline,
# and now and then a piece of the target given to a neighbour.
OTHER_MISSED = 0.25
OTHER_SHRINK_MAX, OTHER_GROW_MAX = 5, 6  # px at 384, uniform
OTHER_GROW_SHARE = 0.3
TARGET_PIECE_SHARE = 0.15


def found_others(labels: np.ndarray, target: int, rng: np.random.Generator, ignore_value: int = 255,
                 positives: Sequence[tuple[float, float]] = ()) -> np.ndarray:
    """The other labelled people of ``labels`` (instance values > 0, not ``target`` nor ``ignore_value``) as a people
    finder would report them: some missed, each mask shrunk or grown by a few pixels, and sometimes a piece of the
    target (one side of a random line through it, at most a fifth of it) among them. Trains the networks to use the
    finder's other people as a hint, not as a certainty. A person whose reported rectangle holds one of
    ``positives`` ((x, y) marks on the target) is left out, as the engine's `prompted_others` leaves out every find
    that may be the clicked person: the networks then learn that an unmarked neighbour around the marks is not the
    target by that alone."""
    out = np.zeros(labels.shape, bool)
    for v in np.unique(labels):
        if v == 0 or v == target or v == ignore_value or rng.random() < OTHER_MISSED:
            continue
        m = (labels == v).astype(np.uint8)
        if rng.random() < OTHER_GROW_SHARE:
            r = int(rng.integers(1, OTHER_GROW_MAX + 1))
            m = cv2.dilate(m, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
        else:
            r = int(rng.integers(0, OTHER_SHRINK_MAX + 1))
            if r:
                m = cv2.erode(m, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
        if positives and m.any():
            rows, cols = np.nonzero(m)
            if any(cols.min() <= x <= cols.max() and rows.min() <= y <= rows.max() for x, y in positives):
                continue
        out |= m > 0
    gt = labels == target
    if out.any() and gt.any() and rng.random() < TARGET_PIECE_SHARE:
        rows, cols = np.nonzero(gt)
        i = int(rng.integers(len(rows)))
        angle = rng.uniform(0, 2 * np.pi)
        side = (np.arange(labels.shape[1])[None, :] - cols[i]) * np.cos(angle) \
            + (np.arange(labels.shape[0])[:, None] - rows[i]) * np.sin(angle)
        piece = gt & (side > 0)
        if piece.sum() <= 0.2 * gt.sum():
            out |= piece
    return out
