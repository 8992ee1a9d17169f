"""Every person in an image: per-person boxes from mediapipe's bundled pose model, then one matte each.

mediapipe's whole-frame pose detector returns one person per call, so people are found one at a time: detect,
paint the found person out of the picture, detect again (offline-models.md §2, "List everyone"); then again in
corner crops, and on body-shaped crops below faces the face detector finds and no find covers yet. The boxes
then prompt the DFIMat engine, which does the actual matting. `PoseDetector.find` also returns each person's
mask, which text grounding (`backend.runtime.grounding`) describes in words.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from backend.runtime.extent import mask_rect
from backend.runtime.finder import corner_crops
from backend.runtime.options import FINDERS
from backend.runtime.pose_prior import MIN_CROP, PoseOnCrop

log = logging.getLogger(__name__)

MAX_PEOPLE = 12
DETECT_MAX_SIDE = 1280  # mediapipe works at 256 px inside; a bigger input only costs time
# `heavy_blur` makes its blur on a copy up to this many times smaller.
BLUR_SHRINK = 8
MIN_MASK_FRACTION = 0.002  # a "person" smaller than this share of the image is detector noise
# Boxes are the found mask's own extent: the ISCN learned from tight boxes (+-8 % jitter), and a 5 % margin cost it on
# finder boxes (held-out every-person best IoU 0.455 -> 0.441, text grounding 55 -> 50 % right; validation 0.636 -> 0.629,
# 62 -> 61 %). Kept as a setting for detectors whose masks run short of the person.
BOX_PADDING = 0.0
DUPLICATE_OVERLAP = 0.5  # of the smaller mask: two finds overlapping this much are one person
PAINT_GROW_PX = 7  # a found person is painted out this far beyond their mask (edges the mask missed)
FACE_CROP_WIDTH = 5.0  # face widths: shoulders and arms
FACE_CROP_ABOVE = 0.7  # face heights above the face box: hair
FACE_CROP_BELOW = 8.0  # face heights below the face box's top: a standing body is ~7.5 heads tall
FACE_COVER = 0.3  # share of the face box a mask must cover to be that face's person (or to have found it already)

Detector = Callable[[np.ndarray], list[list[float]]]


@dataclass(frozen=True)
class Found:
    """What `PoseDetector.find` saw: the (possibly downscaled) photo it looked at, and per person the box in the
    original image's pixels with the person's mask on ``small``."""

    small: np.ndarray
    people: list[tuple[list[float], np.ndarray]]


class PoseDetector:
    """Find up to ``max_people`` people; call with an H×W×3 uint8 RGB image, get [x0, y0, x1, y1] boxes."""

    def __init__(self, max_people: int = MAX_PEOPLE, threshold: float = 0.5) -> None:
        try:
            import mediapipe as mp
        except ImportError as exc:
            raise RuntimeError("listing every person needs mediapipe 0.10.21 in the backend environment") from exc
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                            enable_segmentation=True, min_detection_confidence=0.5)
        self._faces = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
        self.max_people = max_people
        self.threshold = threshold
        # mediapipe graphs are not safe to run from two threads at once.
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pose.close()
        self._faces.close()

    def on_crop(self) -> PoseOnCrop:
        """This detector's graph run on one crop at a time (the engine's pose prior; one graph per process)."""
        return PoseOnCrop(self._pose, self._lock)

    def __call__(self, image: np.ndarray) -> list[list[float]]:
        return [box for box, _ in self.find(image).people]

    def find(self, image: np.ndarray, tiles: bool = True, faces: bool = True, paint_known: bool = True,
             quick_paint: bool = False) -> Found:
        """Everyone found in ``image``: boxes in image pixels, masks on a copy downscaled to <= DETECT_MAX_SIDE.

        ``tiles``: also look in the four overlapping corner crops (`backend.runtime.finder.corner_crops`), where small
        people are big enough for mediapipe's 256 px input; a find that touches a crop's inner edge is cut off there
        and dropped (another crop or the whole image holds the person whole). About twice the time
        (`EngineOptions.finder_tiles`). ``paint_known``: the people found so far are painted out of each crop before
        it is searched, so that its calls go to people not found yet instead of re-finding the known ones
        (`EngineOptions.tiles_paint_known`).

        ``faces``: also segment a body-shaped crop below every detected face no find covers yet
        (`EngineOptions.finder_faces`); about 10 % more time.

        ``quick_paint``: the paint's blur is made on a shrunk copy (`heavy_blur`). Alone, mediapipe is sensitive to
        the difference (held-out text right person 56.6 -> 54.2 %); after the person networks (`NetsDetector`) it is
        not (held-out identical), and it saves ~75 ms of a 1 MP photo's find on one thread."""
        height, width = image.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
        small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA) \
            if scale < 1.0 else image.copy()
        blur = _Blur(small, quick=quick_paint)
        masks = self._passes(small, blur)
        if tiles:
            masks += self._tiled(small, masks, blur if paint_known else None)
        if faces and len(masks) < self.max_people:
            masks += self._face_seeded(small, masks)[: self.max_people - len(masks)]
        return Found(small=small, people=[(_box_of(m, scale, width, height), m) for m in masks])

    def _passes(self, picture: np.ndarray, blur: _Blur, painted: np.ndarray | None = None) -> list[np.ndarray]:
        """Detect, paint the person out, detect again; one mask per person (a find overlapping an earlier one is the
        same person). ``blur`` gives the paint; ``painted``: pixels (people found elsewhere) painted out before the
        first detection."""
        work = np.ascontiguousarray(picture).copy()  # painted over below; the caller's picture keeps its colours
        found: list[np.ndarray] = []

        def paint(mask: np.ndarray) -> None:
            # Within the mask's rectangle grown by the dilation's reach only: the same pixels, without a full-size
            # dilation and boolean copy per find (~3 ms each at 1280 px).
            rect = mask_rect(mask, PAINT_GROW_PX)
            if rect is None:
                return
            x0, y0, x1, y1 = rect
            r = PAINT_GROW_PX
            grown = cv2.dilate(mask[y0:y1, x0:x1].astype(np.uint8), np.ones((2 * r + 1,) * 2, np.uint8)) > 0
            np.copyto(work[y0:y1, x0:x1], blur.image[y0:y1, x0:x1], where=grown[..., None])

        if painted is not None and painted.any():
            paint(painted)
        with self._lock:
            for _ in range(self.max_people):
                result = self._pose.process(work)
                if result.segmentation_mask is None:
                    break
                mask = result.segmentation_mask > self.threshold
                if np.count_nonzero(mask) / mask.size < MIN_MASK_FRACTION:
                    break
                # The paint-out can leave enough of a person for a second, overlapping find: keep the first.
                if not any(_overlap(mask, m) > DUPLICATE_OVERLAP for m in found):
                    found.append(mask)
                paint(mask)
        return found

    def _tiled(self, small: np.ndarray, known: list[np.ndarray], blur: _Blur | None = None) -> list[np.ndarray]:
        """New people in the four corner crops. With the whole picture's ``blur``, the people found so far are
        painted out of each crop first (with it), so the crop's calls go to people not found yet; without it, each
        crop is searched as it is, with a paint of its own."""
        h, w = small.shape[:2]
        found: list[np.ndarray] = []
        for x0, y0, x1, y1 in corner_crops(h, w):
            th, tw = y1 - y0, x1 - x0
            crop = small[y0:y1, x0:x1]
            if blur is None:
                passes = self._passes(crop, _Blur(crop))
            else:
                painted = np.logical_or.reduce([k[y0:y1, x0:x1] for k in known + found]) if known or found else None
                passes = self._passes(crop, blur.crop(x0, y0, x1, y1), painted)
            for m in passes:
                rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
                cut = (x0 > 0 and cols[0] == 0) or (x1 < w and cols[-1] == tw - 1) \
                    or (y0 > 0 and rows[0] == 0) or (y1 < h and rows[-1] == th - 1)
                if cut:
                    continue
                full = np.zeros((h, w), bool)
                full[y0:y1, x0:x1] = m
                if not any(_overlap(full, k) > DUPLICATE_OVERLAP for k in known + found):
                    found.append(full)
        return found[: max(0, self.max_people - len(known))]

    def _face_boxes(self, picture: np.ndarray) -> list[tuple[float, float, float, float]]:
        """(x, y, w, h) of the faces in the whole picture and its corner crops (the detector works at 192 px)."""
        h, w = picture.shape[:2]
        out = []
        for x0, y0, x1, y1 in [(0, 0, w, h), *corner_crops(h, w)]:
            with self._lock:
                result = self._faces.process(np.ascontiguousarray(picture[y0:y1, x0:x1]))
            for d in result.detections or []:
                b = d.location_data.relative_bounding_box
                fw, fh = b.width * (x1 - x0), b.height * (y1 - y0)
                if fw > 4 and fh > 4:  # a few pixels is noise, and too small a seed for a body crop
                    out.append((x0 + b.xmin * (x1 - x0), y0 + b.ymin * (y1 - y0), fw, fh))
        return out

    def _face_seeded(self, small: np.ndarray, known: list[np.ndarray]) -> list[np.ndarray]:
        """Masks of people found from faces no known mask covers: the pose model on a body-shaped crop below each."""
        h, w = small.shape[:2]
        on_crop = self.on_crop()
        found: list[np.ndarray] = []
        for fx, fy, fw, fh in self._face_boxes(small):
            x0, y0 = int(max(0, fx)), int(max(0, fy))
            x1, y1 = int(min(w, fx + fw)), int(min(h, fy + fh))
            if x1 <= x0 or y1 <= y0 or any(m[y0:y1, x0:x1].mean() > FACE_COVER for m in known + found):
                continue
            cx, half = fx + fw / 2, FACE_CROP_WIDTH * fw / 2
            rect = (int(max(0, cx - half)), int(max(0, fy - FACE_CROP_ABOVE * fh)),
                    int(min(w, cx + half)), int(min(h, fy + FACE_CROP_BELOW * fh)))
            if min(rect[2] - rect[0], rect[3] - rect[1]) < MIN_CROP:
                continue
            mask = on_crop(small, rect) > self.threshold
            if mask.mean() < MIN_MASK_FRACTION or mask[y0:y1, x0:x1].mean() < FACE_COVER:
                continue  # nobody, or somebody else's body in the crop
            if not any(_overlap(mask, k) > DUPLICATE_OVERLAP for k in known + found):
                found.append(mask)
        return found


class _Blur:
    """The paint that hides found people from the detector: a heavy blur of the picture (~80 ms at 1280 px on one
    thread, ~4 ms ``quick``), made only when first needed (most corner crops hold nobody new) and then shared by
    every crop of it."""

    def __init__(self, picture: np.ndarray, parent: _Blur | None = None,
                 rect: tuple[int, int, int, int] | None = None, quick: bool = False) -> None:
        self._picture, self._parent, self._rect = picture, parent, rect
        self.quick = quick if parent is None else parent.quick
        self._image: np.ndarray | None = None

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            if self._parent is not None and self._rect is not None:
                x0, y0, x1, y1 = self._rect
                self._image = self._parent.image[y0:y1, x0:x1]
            else:
                sigma = max(3.0, max(self._picture.shape[:2]) / 40)
                self._image = heavy_blur(self._picture, sigma) if self.quick else \
                    cv2.GaussianBlur(np.ascontiguousarray(self._picture), (0, 0), sigmaX=sigma)
        return self._image

    def crop(self, x0: int, y0: int, x1: int, y1: int) -> _Blur:
        return _Blur(self._picture[y0:y1, x0:x1], self, (x0, y0, x1, y1))


def heavy_blur(picture: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of ``sigma`` pixels made on a copy shrunk by up to BLUR_SHRINK and enlarged back. A blur this
    wide leaves no detail that bilinear enlarging could lose: it matches the full-size blur within a grey level or two
    (more at the frame's edge, which the two pad differently)."""
    h, w = picture.shape[:2]
    k = max(1, min(BLUR_SHRINK, int(sigma // 3)))
    if k == 1:
        return cv2.GaussianBlur(np.ascontiguousarray(picture), (0, 0), sigmaX=sigma)
    small = cv2.resize(picture, (max(1, round(w / k)), max(1, round(h / k))), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / k), (w, h), interpolation=cv2.INTER_LINEAR)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller mask's area."""
    return np.count_nonzero(a & b) / max(1, min(np.count_nonzero(a), np.count_nonzero(b)))


def _box_of(mask: np.ndarray, scale: float, width: int, height: int) -> list[float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, x1 = cols[0] / scale, (cols[-1] + 1) / scale
    y0, y1 = rows[0] / scale, (rows[-1] + 1) / scale
    px, py = (x1 - x0) * BOX_PADDING, (y1 - y0) * BOX_PADDING
    return [float(max(0.0, x0 - px)), float(max(0.0, y0 - py)),
            float(min(width - 1.0, x1 + px)), float(min(height - 1.0, y1 + py))]


class NetsDetector:
    """The person networks' finder (`backend.runtime.finder`: NanoDet + MoveNet boxes, a BlazePose mask each,
    contested pixels given to one person) behind `PoseDetector.find`'s interface, so text grounding, the take-out
    and the every-person split use either. With ``mediapipe`` also set, mediapipe's finds that no network find
    already covers are added (``kind`` "both").

    ``detector_boxes``: each find's box is its detector's (NanoDet's, else MoveNet's; `detector_box`) instead of its
    mask's extent. The ISCN learned from tight boxes, and a mask that misses a limb gives a box that cuts it off:
    on the held-out photos the detector's box matches the target's (IoU >= 0.7) for 78.6 % of the targets, the
    mask's extent for 71.0 % (docs/experiments.md, "People networks")."""

    def __init__(self, mediapipe: PoseDetector | None = None, keep_two_poses: bool = False,
                 detector_boxes: bool = True) -> None:
        from backend.runtime.finder import FinderOptions, PeopleFinder

        self._finder = PeopleFinder(FinderOptions(keep_two_poses=keep_two_poses), threads=_threads())
        self._mediapipe = mediapipe
        self._detector_boxes = detector_boxes
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> list[list[float]]:
        return [box for box, _ in self.find(image).people]

    def find(self, image: np.ndarray, tiles: bool = True, faces: bool = True, paint_known: bool = True,
             net_tiles: bool = False) -> Found:
        """Everyone found in ``image``; ``tiles``, ``faces`` and ``paint_known`` steer only the mediapipe finds of
        "both"; ``net_tiles``: NanoDet also looks in the corner crops (`backend.runtime.finder.PeopleFinder.find`)."""
        height, width = image.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
        size = (round(width * scale), round(height * scale))
        with self._lock:
            found = self._finder.find(image, tiles=net_tiles)
        people: list[tuple[list[float], np.ndarray]] = []
        for person in found[:MAX_PEOPLE]:
            small = _on_picture(person, scale, size)
            if small.mean() < MIN_MASK_FRACTION:
                continue
            if self._detector_boxes:
                box = detector_box(person.box, width, height)
            else:
                box = _box_of(small, scale, width, height)
            people.append((box, small))
        if self._mediapipe is not None and len(people) < MAX_PEOPLE:
            extra = self._mediapipe.find(image, tiles=tiles, faces=faces, paint_known=paint_known, quick_paint=True)
            for box, mask in extra.people:
                if not any(_overlap(mask, m) > DUPLICATE_OVERLAP for _, m in people):
                    people.append((box, mask))
            return Found(small=extra.small, people=people[:MAX_PEOPLE])
        small_image = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else image.copy()
        return Found(small=small_image, people=people)


def detector_box(box: Sequence[float], width: int, height: int) -> list[float]:
    """A detector's x0, y0, x1, y1 kept inside a ``width`` x ``height`` image (the networks' boxes may reach past the
    frame for a person it cuts)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [min(max(0.0, x0), width - 1.0), min(max(0.0, y0), height - 1.0),
            min(max(0.0, x1), width - 1.0), min(max(0.0, y1), height - 1.0)]


def _on_picture(person: Any, scale: float, size: tuple[int, int]) -> np.ndarray:
    """A finder person's mask (kept within its rectangle) as a bool mask of the picture of ``size`` (w, h) the photo
    is downscaled to by ``scale``."""
    out = np.zeros((size[1], size[0]), bool)
    placed = rect_on_picture(person.mask, person.rect, (scale, scale), size)
    if placed is not None:
        (x0, y0, x1, y1), mask = placed
        out[y0:y1, x0:x1] = mask
    return out


def rect_on_picture(mask: np.ndarray | None, rect: Sequence[int], scale: tuple[float, float], size: tuple[int, int]
                    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """A probability ``mask`` kept within ``rect`` (x0, y0, x1, y1, image pixels) on the picture of ``size`` (w, h)
    the photo is downscaled to by ``scale`` (x, y): its rectangle there and the bool mask within it, or None when
    nothing of it is left. Only the rectangle is resized, never a photo-sized float mask (24 MP photos)."""
    if mask is None or not mask.size:
        return None
    x0, y0, x1, y1 = rect
    (sx, sy), (w, h) = scale, size
    px0, py0 = int(np.floor(x0 * sx)), int(np.floor(y0 * sy))
    px1, py1 = min(w, max(px0 + 1, int(np.ceil(x1 * sx)))), min(h, max(py0 + 1, int(np.ceil(y1 * sy))))
    if px1 <= px0 or py1 <= py0:
        return None
    if sx < 1.0 or sy < 1.0:
        mask = cv2.resize(mask.astype(np.float32), (px1 - px0, py1 - py0), interpolation=cv2.INTER_AREA)
    return (px0, py0, px1, py1), mask >= 0.5


def _threads() -> int | None:
    """The person networks run on as many threads as torch does (the engine's own setting), so one knob rules."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


_finders: dict[tuple[str, bool, bool], Any] = {}


def people_finder(kind: str = "nets", keep_two_poses: bool = False,
                  detector_boxes: bool = True) -> PoseDetector | NetsDetector:
    """The process-wide finder of ``kind`` (`FINDERS`): the person networks, mediapipe's pose model, or both;
    ``keep_two_poses`` as `backend.runtime.finder.FinderOptions` has it, ``detector_boxes`` as `NetsDetector` (the
    networks only). "both" without mediapipe in the environment is the networks alone (said once in the log)."""
    if kind not in FINDERS:
        raise ValueError(f"finder must be one of {', '.join(FINDERS)}, got {kind!r}")
    if kind == "mediapipe":
        return pose_detector()
    with _default_lock:
        key = (kind, keep_two_poses, detector_boxes)
        if key not in _finders:
            mediapipe = None
            if kind == "both":
                try:
                    mediapipe = _pose_detector_held()
                except RuntimeError as exc:
                    log.warning("the person networks find people alone: %s", exc)
            _finders[key] = NetsDetector(mediapipe, keep_two_poses, detector_boxes)
        return _finders[key]


_default: PoseDetector | None = None
_default_lock = threading.Lock()


def _pose_detector_held() -> PoseDetector:
    global _default
    if _default is None:
        _default = PoseDetector()
    return _default


def pose_detector() -> PoseDetector:
    """The process-wide mediapipe PoseDetector, made on first use (its graph takes ~0.5 s to build)."""
    with _default_lock:
        return _pose_detector_held()


def default_detector(engine: Any = None) -> Detector:
    """The engine's own person finder when it has one, else the shared mediapipe PoseDetector."""
    own = getattr(engine, "detect_people", None)
    if callable(own):
        return own
    return pose_detector()


def matte_people(engine: Any, image: np.ndarray, prompts: dict, every_person: bool = False,
                 detector: Detector | None = None,
                 cancel: threading.Event | None = None) -> list[tuple[list[float] | None, np.ndarray]]:
    """Matte one image in a throw-away engine session.

    With ``every_person`` each detected person is matted from its box (plus the given text/clicks), giving
    ``[(box, alpha), ...]``; when nobody is detected, the prompts alone give one matte (box None), and nothing
    when there are no prompts. Otherwise one matte from ``prompts``.
    """
    sid = engine.open(image)
    try:
        if not every_person:
            return [(prompts.get("box"), engine.predict(sid, prompts))]
        own = getattr(engine, "people_in", None)
        # The engine's own finder runs inside the session, so each person's round reuses its finds.
        boxes = own(sid) if detector is None and callable(own) else (detector or default_detector(engine))(image)
        out: list[tuple[list[float] | None, np.ndarray]] = []
        for box in boxes:
            if cancel is not None and cancel.is_set():
                break
            engine.reset(sid)
            out.append((box, engine.predict(sid, {**prompts, "box": box})))
        if not boxes and any(prompts.get(k) for k in ("box", "clicks", "scribbles", "text")):
            out.append((prompts.get("box"), engine.predict(sid, prompts)))
        return out
    finally:
        engine.close(sid)
