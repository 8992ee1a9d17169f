"""Where prompts become tensors.

From the accumulated prompt history and the newest round we build, in model (letterboxed square) space:
  * a point set for the visual sampler: positive/negative clicks, points along scribbles, box corners and centre,
    each with a kind id (see `KIND_*`);
  * dense maps at stride 4 (G = S/4): all positive marks, all negative marks, the box, and this round's positive /
    negative marks (the latter two feed the conflict map of the CRM);
  * the text embedding (frozen sentence encoder output, projected later by the model).
`collate` pads several samples into one batch with validity masks.

Prompt objects are duck-typed as in `backend.dfimat.prompts`: clicks have `.x .y .positive`, scribbles
`.points .positive .width`, boxes `.x0 .y0 .x1 .y1`; a history has `.clicks .scribbles .box .text`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from backend.dfimat.encoder import Letterbox

KIND_POS_CLICK, KIND_NEG_CLICK, KIND_POS_SCRIBBLE, KIND_NEG_SCRIBBLE, KIND_BOX_TL, KIND_BOX_BR, KIND_BOX_CENTRE = range(7)
NUM_KINDS = 7
MAX_POINTS = 48  # newest points are kept: later rounds matter most
DENSE_CHANNELS = 5  # all-pos, all-neg, box, new-pos, new-neg
TEXT_DIM = 384
_SHIFT = 4  # sub-pixel precision for cv2 drawing


@dataclass
class PromptTensors:
    """One sample's prompts in model space. points: (K, 2) model px; kinds: (K,); dense: (5, G, G)."""

    points: np.ndarray
    kinds: np.ndarray
    dense: np.ndarray
    text_emb: np.ndarray | None


def _scribble_samples(points: np.ndarray, spacing: float, limit: int = 8) -> np.ndarray:
    """Points spread evenly along a polyline (model px)."""
    if len(points) == 1:
        return points
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    total = float(seg.sum())
    n = int(np.clip(total // spacing + 1, 1, limit))
    targets = np.linspace(0.0, total, n)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    xs = np.interp(targets, cum, points[:, 0])
    ys = np.interp(targets, cum, points[:, 1])
    return np.stack([xs, ys], axis=1).astype(np.float32)


def _draw_disk(canvas: np.ndarray, xy_grid: np.ndarray, radius: float) -> None:
    c = tuple(int(round(v * (1 << _SHIFT))) for v in xy_grid)
    cv2.circle(canvas, c, int(round(radius * (1 << _SHIFT))), 1.0, -1, cv2.LINE_8, _SHIFT)


def _draw_line(canvas: np.ndarray, pts_grid: np.ndarray, thickness: float) -> None:
    pts = np.round(pts_grid * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, 1.0, max(1, int(round(thickness))), cv2.LINE_8, _SHIFT)


def _to_grid(xy_model: np.ndarray, stride: int = 4) -> np.ndarray:
    return (xy_model + 0.5) / stride - 0.5


def build_prompt_tensors(history, new_round, box: Letterbox,
                         embed_text: Callable[[str], np.ndarray] | None = None,
                         others: np.ndarray | None = None) -> PromptTensors:
    """Tensors for the next prediction.

    history: everything the user gave so far INCLUDING `new_round`; new_round: only this round's additions (used for
    the "new" dense channels). Coordinates of both are in image pixels of the letterboxed image. ``others``: a G x G
    map (0-1) of other people, known not to be the target; it joins the negative marks' channel.
    """
    g = box.size // 4
    dense = np.zeros((DENSE_CHANNELS, g, g), np.float32)
    pts: list[np.ndarray] = []
    kinds: list[int] = []
    click_radius = max(1.5, box.size / 192)  # grid px; about 8 model px at S = 384
    new_click_ids = {id(c) for c in getattr(new_round, "clicks", ())}
    new_scribble_ids = {id(s) for s in getattr(new_round, "scribbles", ())}

    for c in history.clicks:
        xy = box.to_model(np.array([c.x, c.y], np.float32))
        pts.append(xy[None])
        kinds.append(KIND_POS_CLICK if c.positive else KIND_NEG_CLICK)
        channels = [0 if c.positive else 1] + ([3 if c.positive else 4] if id(c) in new_click_ids else [])
        for ch in channels:
            _draw_disk(dense[ch], _to_grid(xy), click_radius)

    for s in history.scribbles:
        poly = box.to_model(np.asarray(s.points, np.float32).reshape(-1, 2))
        samples = _scribble_samples(poly, spacing=box.size / 24)
        pts.append(samples)
        kinds.extend([KIND_POS_SCRIBBLE if s.positive else KIND_NEG_SCRIBBLE] * len(samples))
        thick = max(1.0, float(s.width) * box.scale / 4)
        channels = [0 if s.positive else 1] + ([3 if s.positive else 4] if id(s) in new_scribble_ids else [])
        for ch in channels:
            if len(poly) == 1:
                _draw_disk(dense[ch], _to_grid(poly[0]), max(thick / 2, 1.0))
            else:
                _draw_line(dense[ch], _to_grid(poly), thick)

    if history.box is not None:
        b = history.box
        corners = box.to_model(np.array([[b.x0, b.y0], [b.x1, b.y1]], np.float32))
        centre = corners.mean(axis=0, keepdims=True)
        pts.append(np.concatenate([corners, centre]))
        kinds.extend([KIND_BOX_TL, KIND_BOX_BR, KIND_BOX_CENTRE])
        (gx0, gy0), (gx1, gy1) = corners / 4
        x0, y0 = int(np.floor(max(gx0, 0))), int(np.floor(max(gy0, 0)))
        x1, y1 = int(np.ceil(min(gx1, g))), int(np.ceil(min(gy1, g)))
        dense[2, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0

    if others is not None:
        np.maximum(dense[1], others.astype(np.float32), out=dense[1])

    if pts:
        points = np.concatenate(pts).astype(np.float32)[-MAX_POINTS:]
        kind_arr = np.asarray(kinds, np.int64)[-MAX_POINTS:]
    else:
        points, kind_arr = np.zeros((0, 2), np.float32), np.zeros((0,), np.int64)
    text = getattr(history, "text", None)
    text_emb = embed_text(text) if (text and embed_text is not None) else None
    return PromptTensors(points=points, kinds=kind_arr, dense=dense, text_emb=text_emb)


def collate(samples: Iterable[PromptTensors], size: int) -> dict[str, torch.Tensor]:
    """Batch samples. Returns points (B, K, 2) in [0, 1], kinds (B, K), valid (B, K) bool, dense (B, 5, G, G),
    text (B, 384), has_text (B,) bool. K >= 1 so attention never sees an empty sequence."""
    samples = list(samples)
    k = max(1, max(len(s.points) for s in samples))
    b = len(samples)
    points = torch.zeros(b, k, 2)
    kinds = torch.zeros(b, k, dtype=torch.long)
    valid = torch.zeros(b, k, dtype=torch.bool)
    text = torch.zeros(b, TEXT_DIM)
    has_text = torch.zeros(b, dtype=torch.bool)
    for i, s in enumerate(samples):
        n = len(s.points)
        if n:
            points[i, :n] = torch.from_numpy(s.points) / size
            kinds[i, :n] = torch.from_numpy(s.kinds)
            valid[i, :n] = True
        if s.text_emb is not None:
            text[i] = torch.from_numpy(np.array(s.text_emb, dtype=np.float32))
            has_text[i] = True
    dense = torch.from_numpy(np.stack([s.dense for s in samples]))
    return {"points": points, "kinds": kinds, "valid": valid, "dense": dense, "text": text, "has_text": has_text}
