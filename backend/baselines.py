"""What a user could use instead of DFIMat-S, behind the engine's call shape, for side-by-side evaluation.

* :class:`GrabCutBaseline` — OpenCV GrabCut. A box initialises it the classic way (outside = background); clicks and
  scribbles become hard seeds (``GC_FGD`` / ``GC_BGD``). From round 2 on it restarts from its previous result plus
  every seed given so far, the way the OpenCV GrabCut demo is used interactively. Text: unsupported.
* :class:`MediaPipeBaseline` — MediaPipe pose segmentation (mediapipe 0.10.21 legacy ``mp.solutions.pose``,
  ``model_complexity=1``, ``enable_segmentation=True``) on a person crop: the box + 15 % padding, or, for clicks,
  a few crops placed around the click (``offline-models.md`` §2); of the candidate crops it keeps the mask that
  agrees best with every positive and negative point given so far. Text: unsupported.

Both keep each session's prompts across rounds. A round that has nothing but text raises
:class:`UnsupportedPrompt` (evaluation reports it as n/a); text beside visual prompts is ignored.
"""

from __future__ import annotations

import itertools
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import cv2
import numpy as np

from backend.dfimat.prompts import Box, PromptHistory, RoundPrompts

__all__ = [
    "UnsupportedPrompt",
    "BaselineSessionError",
    "GrabCutBaseline",
    "MediaPipeBaseline",
    "BASELINES",
    "load_baseline",
]


class UnsupportedPrompt(ValueError):
    """The method cannot use this kind of prompt (e.g. text for GrabCut)."""


class BaselineSessionError(KeyError):
    """Unknown or closed session id."""


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB from RGB, RGBA or grayscale uint8 input."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 (or RGBA / grayscale), got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} is too small")
    return np.ascontiguousarray(image)


@dataclass
class _Session:
    image: np.ndarray
    history: PromptHistory = field(default_factory=PromptHistory)
    state: dict = field(default_factory=dict)


class _SessionMethod(ABC):
    """Session bookkeeping shared by the baselines: ``open`` / ``predict`` / ``reset`` / ``close``."""

    name = "baseline"

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def open(self, image: np.ndarray) -> str:
        rgb = as_rgb(image)
        with self._lock:
            sid = f"{self.name}-{next(self._ids)}"
            self._sessions[sid] = _Session(rgb)
        return sid

    def _session(self, sid: str) -> _Session:
        try:
            return self._sessions[sid]
        except KeyError:
            raise BaselineSessionError(f"unknown or closed session {sid!r}") from None

    def reset(self, sid: str) -> None:
        session = self._session(sid)
        session.history.clear()
        session.state.clear()

    def close(self, sid: str) -> None:
        with self._lock:
            if self._sessions.pop(sid, None) is None:
                raise BaselineSessionError(f"unknown or closed session {sid!r}")

    def predict(self, sid: str, prompts: dict) -> np.ndarray:
        """Add this round's prompts (engine dict schema) and return H x W float32 alpha in [0, 1]."""
        session = self._session(sid)
        h, w = session.image.shape[:2]
        round_prompts = RoundPrompts.from_dict(prompts, w, h)
        merged = PromptHistory(list(session.history.rounds) + [round_prompts]).merged()
        if not (merged.clicks or merged.scribbles or merged.box):
            raise UnsupportedPrompt(f"{self.name} cannot use text prompts; give a box, clicks or scribbles")
        alpha = self._predict(session, merged)
        session.history.add(round_prompts)  # only after success: a failed round leaves the session as it was
        return alpha

    @abstractmethod
    def _predict(self, session: _Session, prompts: RoundPrompts) -> np.ndarray:
        """Alpha for all prompts so far (``prompts`` merges every round, this one included)."""


def _points(prompts: RoundPrompts) -> list[tuple[float, float, bool]]:
    """Clicks and scribble vertices as (x, y, positive)."""
    out = [(c.x, c.y, c.positive) for c in prompts.clicks]
    for s in prompts.scribbles:
        out += [(x, y, s.positive) for x, y in s.points]
    return out


def _value_at(alpha: np.ndarray, x: float, y: float) -> float:
    h, w = alpha.shape
    return float(alpha[min(h - 1, int(y)), min(w - 1, int(x))])


class GrabCutBaseline(_SessionMethod):
    """OpenCV GrabCut at a working resolution of at most ``work_side`` px (the result is upsampled)."""

    name = "grabcut"

    def __init__(self, iterations: int = 5, work_side: int = 480) -> None:
        super().__init__()
        self.iterations = iterations
        self.work_side = work_side

    def _predict(self, session: _Session, prompts: RoundPrompts) -> np.ndarray:
        image = session.image
        h, w = image.shape[:2]
        scale = min(1.0, self.work_side / max(h, w))
        size = (max(2, round(w * scale)), max(2, round(h * scale)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
        work_bgr = cv2.cvtColor(work, cv2.COLOR_RGB2BGR)
        wh, ww = work.shape[:2]
        sx, sy = ww / w, wh / h
        scaled = prompts.scaled(sx, sy)

        previous = session.state.get("labels")
        if previous is not None:
            labels = np.where(previous, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        elif scaled.box is not None:
            labels = np.full((wh, ww), cv2.GC_BGD, np.uint8)
        else:
            labels = np.full((wh, ww), cv2.GC_PR_BGD, np.uint8)
        if scaled.box is not None:
            x0, y0, x1, y1 = _box_pixels(scaled.box, ww, wh)
            outside = np.ones((wh, ww), bool)
            outside[y0:y1, x0:x1] = False
            if previous is None:
                labels[~outside] = cv2.GC_PR_FGD
            labels[outside] = cv2.GC_BGD
        elif previous is None:
            # Only clicks: assume the person extends around each positive click, as the user meant.
            reach = max(3, int(0.12 * min(wh, ww)))
            for x, y, positive in _points(scaled):
                if positive:
                    cv2.circle(labels, (int(x), int(y)), reach, cv2.GC_PR_FGD, -1)
        seed_radius = max(2, int(round(0.01 * np.hypot(wh, ww))))
        for click in scaled.clicks:
            value = cv2.GC_FGD if click.positive else cv2.GC_BGD
            cv2.circle(labels, (int(click.x), int(click.y)), seed_radius, value, -1)
        for stroke in scaled.scribbles:
            value = cv2.GC_FGD if stroke.positive else cv2.GC_BGD
            pts = np.array(stroke.points, np.float64).astype(np.int32)
            cv2.polylines(labels, [pts], False, value, thickness=max(1, int(round(stroke.width))))

        fg_possible = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        bg_possible = (labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)
        if not fg_possible.any():
            result = np.zeros((wh, ww), bool)
        else:
            if not bg_possible.any():  # GrabCut needs both models: the frame itself is the best bg guess
                labels[0, :] = labels[-1, :] = labels[:, 0] = labels[:, -1] = cv2.GC_PR_BGD
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global RNG: fix it so runs repeat exactly
            cv2.grabCut(work_bgr, labels, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
            result = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        session.state["labels"] = result
        alpha = result.astype(np.float32)
        if scale < 1:
            alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(alpha, 0.0, 1.0)


def _box_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    x0 = int(np.clip(np.floor(box.x0), 0, width - 1))
    y0 = int(np.clip(np.floor(box.y0), 0, height - 1))
    x1 = int(np.clip(np.ceil(box.x1), x0 + 1, width))
    y1 = int(np.clip(np.ceil(box.y1), y0 + 1, height))
    return x0, y0, x1, y1


class MediaPipeBaseline(_SessionMethod):
    """MediaPipe pose segmentation on a per-person crop (box + 15 % padding, or crops placed around clicks)."""

    name = "mediapipe"
    BOX_PADDING = 0.15
    CROP_HEIGHTS = (1.0, 0.8, 0.6, 0.45)
    CLICK_POSITIONS = (0.35, 0.55, 0.75)  # where in the crop's height the click sits
    CROP_ASPECT = 0.75  # width / height
    MIN_CROP = 16

    def __init__(self) -> None:
        super().__init__()
        import mediapipe as mp  # imported here: loading TFLite models costs a second and only this class needs it

        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True)
        self._pose_lock = threading.Lock()

    def shutdown(self) -> None:
        self._pose.close()

    def _on_crop(self, session: _Session, rect: tuple[int, int, int, int]) -> np.ndarray:
        cache = session.state.setdefault("crops", {})
        if rect not in cache:
            x0, y0, x1, y1 = rect
            h, w = session.image.shape[:2]
            alpha = np.zeros((h, w), np.float32)
            crop = np.ascontiguousarray(session.image[y0:y1, x0:x1])
            with self._pose_lock:
                result = self._pose.process(crop)
            if result.segmentation_mask is not None:
                alpha[y0:y1, x0:x1] = np.clip(result.segmentation_mask, 0.0, 1.0)
            cache[rect] = alpha
        return cache[rect]

    def _box_rect(self, box: Box, w: int, h: int) -> tuple[int, int, int, int] | None:
        pw, ph = self.BOX_PADDING * (box.x1 - box.x0), self.BOX_PADDING * (box.y1 - box.y0)
        x0, y0, x1, y1 = _box_pixels(Box(max(0.0, box.x0 - pw), max(0.0, box.y0 - ph),
                                         min(w, box.x1 + pw), min(h, box.y1 + ph)), w, h)
        return (x0, y0, x1, y1) if min(x1 - x0, y1 - y0) >= self.MIN_CROP else None

    def _click_rects(self, x: float, y: float, w: int, h: int) -> list[tuple[int, int, int, int]]:
        rects = []
        for frac in self.CROP_HEIGHTS:
            ch = frac * h
            cw = min(w, self.CROP_ASPECT * ch)
            for pos in self.CLICK_POSITIONS:
                x0 = float(np.clip(x - cw / 2, 0, w - cw))
                y0 = float(np.clip(y - pos * ch, 0, h - ch))
                rect = (int(x0), int(y0), int(min(w, x0 + cw)), int(min(h, y0 + ch)))
                if min(rect[2] - rect[0], rect[3] - rect[1]) >= self.MIN_CROP and rect not in rects:
                    rects.append(rect)
        return rects

    def _predict(self, session: _Session, prompts: RoundPrompts) -> np.ndarray:
        h, w = session.image.shape[:2]
        points = _points(prompts)
        positives = [(x, y) for x, y, p in points if p]

        def score(alpha: np.ndarray) -> int:
            return sum((_value_at(alpha, x, y) > 0.5) == p for x, y, p in points)

        candidates: list[tuple[int, int, int, int]] = []
        if prompts.box is not None:
            rect = self._box_rect(prompts.box, w, h)
            if rect is not None:
                candidates.append(rect)
        for x, y in positives[:2]:  # the first clicks place the person; later ones are corrections
            candidates += [r for r in self._click_rects(x, y, w, h) if r not in candidates]
        best, best_score = np.zeros((h, w), np.float32), -1
        for rect in candidates:
            alpha = self._on_crop(session, rect)
            if not alpha.any():
                continue
            s = score(alpha)
            if s > best_score:
                best, best_score = alpha, s
            if s == len(points) and (prompts.box is None or rect == candidates[0]):
                break  # agrees with everything the user said: no need to try more crops
        return best.copy()


BASELINES = {"grabcut": GrabCutBaseline, "mediapipe": MediaPipeBaseline}


def load_baseline(name: str) -> _SessionMethod:
    """A fresh baseline by name (``grabcut`` or ``mediapipe``)."""
    try:
        return BASELINES[name]()
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}") from None
