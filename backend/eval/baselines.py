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

from backend.dfimat.prompts import PromptHistory, RoundPrompts
from backend.runtime.marks import points
from backend.runtime.pose_prior import PoseOnCrop, Rect, box_pixels, pose_mask

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
            x0, y0, x1, y1 = box_pixels(scaled.box, ww, wh)
            outside = np.ones((wh, ww), bool)
            outside[y0:y1, x0:x1] = False
            if previous is None:
                labels[~outside] = cv2.GC_PR_FGD
            labels[outside] = cv2.GC_BGD
        elif previous is None:
            # Only clicks: assume the person extends around each positive click, as the user meant.
            reach = max(3, int(0.12 * min(wh, ww)))
            for x, y, positive in points(scaled):
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


class MediaPipeBaseline(_SessionMethod):
    """MediaPipe pose segmentation on a per-person crop (box + 15 % padding, or crops placed around clicks;
    `backend.runtime.pose_prior`)."""

    name = "mediapipe"

    def __init__(self) -> None:
        super().__init__()
        self._pose = PoseOnCrop()

    def shutdown(self) -> None:
        self._pose.close()

    def _predict(self, session: _Session, prompts: RoundPrompts) -> np.ndarray:
        h, w = session.image.shape[:2]
        cache = session.state.setdefault("crops", {})

        def on_crop(rect: Rect) -> np.ndarray:
            if rect not in cache:
                cache[rect] = self._pose(session.image, rect)
            return cache[rect]

        return pose_mask(prompts, w, h, on_crop)


BASELINES = {"grabcut": GrabCutBaseline, "mediapipe": MediaPipeBaseline}


def load_baseline(name: str) -> _SessionMethod:
    """A fresh baseline by name (``grabcut`` or ``mediapipe``)."""
    try:
        return BASELINES[name]()
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}") from None
