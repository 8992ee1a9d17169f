"""Painted stroke masks → scribbles (polylines with a width) and clicks (small dabs).

Editor plugins cannot vectorise brush strokes without numpy, so they send the stroke layer's alpha cropped to
its bounds; this module turns each connected stroke into the prompt schema of ``backend.dfimat.prompts``:
a round-ish dab becomes a click at its centre, anything elongated becomes a scribble along its centre line
(thinning), with the stroke's width measured by the distance transform and the line simplified.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# A component counts as a dab (click) when its extent is at most this many stroke widths.
DAB_EXTENT_IN_WIDTHS = 2.0
MIN_AREA_PX = 4  # specks smaller than this are brush noise, not intent
SIMPLIFY_EPSILON_PX = 1.5
MAX_POINTS_PER_SCRIBBLE = 512

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


@dataclass
class StrokePrompts:
    clicks: list[list]  # [[x, y, positive], ...]
    scribbles: list[dict]  # [{"points": [[x, y], ...], "positive": bool, "width": px}, ...]


def mask_to_prompts(mask: np.ndarray, x: int = 0, y: int = 0, positive: bool = True,
                    image_size: tuple[int, int] | None = None, threshold: int = 128) -> StrokePrompts:
    """Convert a uint8 stroke mask placed at image offset (``x``, ``y``) into clicks and scribbles.

    ``image_size`` = (width, height) clips every point into the image, since prompts outside it are refused.
    Returns image pixel coordinates (pixel centres).
    """
    if mask.ndim != 2:
        raise ValueError(f"stroke mask must be 2-D (H×W), got shape {mask.shape}")
    binary = (np.asarray(mask) >= threshold).astype(np.uint8)
    out = StrokePrompts([], [])
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    for label in range(1, count):
        left, top, w, h, area = (int(v) for v in stats[label])
        if area < MIN_AREA_PX:
            continue
        comp = (labels[top:top + h, left:left + w] == label).astype(np.uint8)
        # Pad so the distance transform sees background around the stroke at the crop border.
        comp = cv2.copyMakeBorder(comp, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        dist = cv2.distanceTransform(comp, cv2.DIST_L2, 5)
        half_width = float(dist.max())
        width = max(1.0, 2.0 * half_width)
        if max(w, h) <= DAB_EXTENT_IN_WIDTHS * width:
            cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
            px, py = _to_image(cx - 1 + left + x, cy - 1 + top + y, image_size)
            out.clicks.append([px, py, bool(positive)])
            continue
        skeleton = cv2.ximgproc.thinning(comp * 255, thinningType=cv2.ximgproc.THINNING_ZHANGSUEN) > 0
        widths = 2.0 * dist[skeleton]
        stroke_width = float(np.median(widths)) if widths.size else width
        for line in _trace(skeleton):
            pts = _simplify(line)
            points = [list(_to_image(c - 1 + left + x, r - 1 + top + y, image_size)) for r, c in pts]
            out.scribbles.append({"points": points, "positive": bool(positive),
                                  "width": round(max(1.0, stroke_width), 2)})
    return out


def _to_image(px: float, py: float, image_size: tuple[int, int] | None) -> tuple[float, float]:
    if image_size is not None:
        px = min(max(px, 0.0), image_size[0] - 1.0)
        py = min(max(py, 0.0), image_size[1] - 1.0)
    return float(px), float(py)


def _trace(skeleton: np.ndarray) -> list[list[tuple[int, int]]]:
    """Split a one-pixel-wide skeleton into polylines running between end points and junctions.

    Every skeleton edge is walked once; closed loops without end points are cut at an arbitrary pixel.
    """
    rows, cols = np.nonzero(skeleton)
    pixels = set(zip(rows.tolist(), cols.tolist(), strict=True))
    if not pixels:
        return []

    def neighbours(p: tuple[int, int]) -> list[tuple[int, int]]:
        # m-adjacency: a diagonal step counts only when no shared 4-neighbour links the two pixels, otherwise
        # every staircase corner of the thinned line would look like a junction.
        r, c = p
        out = []
        for dr, dc in _NEIGHBOURS:
            q = (r + dr, c + dc)
            if q not in pixels:
                continue
            if dr and dc and ((r + dr, c) in pixels or (r, c + dc) in pixels):
                continue
            out.append(q)
        return out

    degree = {p: len(neighbours(p)) for p in pixels}
    nodes = {p for p, d in degree.items() if d != 2}
    visited_edges: set[frozenset] = set()
    lines: list[list[tuple[int, int]]] = []

    def walk(start: tuple[int, int], nxt: tuple[int, int]) -> list[tuple[int, int]]:
        line = [start]
        prev, cur = start, nxt
        visited_edges.add(frozenset((prev, cur)))
        while True:
            line.append(cur)
            if cur in nodes or cur == start:
                return line
            onward = [n for n in neighbours(cur) if n != prev and frozenset((cur, n)) not in visited_edges]
            if not onward:
                return line
            prev, cur = cur, onward[0]
            visited_edges.add(frozenset((prev, cur)))

    for node in sorted(nodes):
        if degree[node] == 0:
            lines.append([node])
            continue
        for n in neighbours(node):
            if frozenset((node, n)) not in visited_edges:
                lines.append(walk(node, n))
    # Whatever is left is made of loops of degree-2 pixels.
    for p in sorted(pixels):
        for n in neighbours(p):
            if frozenset((p, n)) not in visited_edges:
                lines.append(walk(p, n))
    return _drop_spurs(lines)


def _drop_spurs(lines: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    # Thinning leaves 1–2 pixel side branches at stroke corners; they carry no intent of their own.
    if len(lines) <= 1:
        return lines
    kept = [ln for ln in lines if len(ln) > 3]
    return kept or [max(lines, key=len)]


def _simplify(line: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if len(line) <= 2:
        return line
    curve = np.array([[c, r] for r, c in line], dtype=np.int32).reshape(-1, 1, 2)
    eps = SIMPLIFY_EPSILON_PX
    approx = cv2.approxPolyDP(curve, eps, closed=False).reshape(-1, 2)
    while len(approx) > MAX_POINTS_PER_SCRIBBLE:
        eps *= 2
        approx = cv2.approxPolyDP(curve, eps, closed=False).reshape(-1, 2)
    return [(int(r), int(c)) for c, r in approx]
