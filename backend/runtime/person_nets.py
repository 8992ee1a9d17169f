"""The three converted person networks (models/person/, built by tools/person_models/build.py), run with onnxruntime.

- `NanoDet`: NanoDet-m 416, a COCO detector; only its person class is kept. Boxes, no keypoints.
- `MoveNet`: MoveNet multipose lightning; up to 6 people, each with 17 COCO keypoints and a box.
- `BlazePoseSeg`: BlazePose-full's segmentation of the person centred in a square crop around a box.

Each class is small: ``preprocess`` (image → input tensor + the mapping back), a pure-numpy ``decode`` that tests can
feed hand-made tensors, and ``__call__`` that runs both. All coordinates returned are image pixels (x right, y down,
continuous: pixel (i, j) covers [i, i + 1) × [j, j + 1)). Sessions are created lazily, once per process and file, after
the file's sha256 has been checked against models/manifest.json. Only onnxruntime, numpy and opencv are needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
PERSON_DIR = "person"
NANODET_FILE = "nanodet-m-416.onnx"
MOVENET_FILE = "movenet-multipose-lightning.onnx"
BLAZEPOSE_FILE = "blazepose-full.onnx"

# COCO keypoint order of MoveNet (and of Person.keypoints).
KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle")
# Limbs between keypoints (indices into KEYPOINTS), for distances to a person's skeleton.
SKELETON = ((5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14),
            (14, 16), (0, 5), (0, 6), (0, 1), (0, 2), (1, 3), (2, 4))


# ---------------------------------------------------------------- files and sessions

def models_dir() -> Path:
    """``$DFIMAT_MODELS_DIR`` when it holds the person networks, else the repo's ``models/``."""
    env = os.environ.get("DFIMAT_MODELS_DIR")
    if env and (Path(env) / PERSON_DIR / NANODET_FILE).is_file():
        return Path(env)
    return REPO_MODELS


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_record(file: str, root: Path | None = None) -> dict:
    """The manifest's ``{"path", "sha256", "size", "url"}`` for ``person/<file>``."""
    root = root or models_dir()
    manifest = root / "manifest.json"
    if not manifest.is_file():
        manifest = REPO_MODELS / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    for model in data["models"]:
        for f in model["files"]:
            if f["path"] == f"{PERSON_DIR}/{file}":
                return f
    raise FileNotFoundError(f"{manifest} lists no {PERSON_DIR}/{file}")


def verified_path(file: str, root: Path | None = None) -> Path:
    """The model file's path once its size and sha256 match the manifest (a replaced file is refused)."""
    root = root or models_dir()
    path = root / PERSON_DIR / file
    record = manifest_record(file, root)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (python tools/person_models/build.py rebuilds it)")
    if record.get("size") is not None and path.stat().st_size != record["size"]:
        raise ValueError(f"{path}: size {path.stat().st_size}, manifest says {record['size']}")
    digest = _sha256(path)
    if digest != record["sha256"]:
        raise ValueError(f"{path}: sha256 {digest[:12]}…, manifest says {record['sha256'][:12]}…")
    return path


_SESSIONS: dict[tuple[str, int | None, bool], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def session(file: str, threads: int | None = None, cuda: bool = False) -> Any:
    """One onnxruntime session per (file, threads, cuda) and process; the sha256 is checked when it is created.

    ``threads`` sets intra_op_num_threads (None: onnxruntime's default, one per core). ``cuda`` puts the CUDA provider
    first when this onnxruntime build has it; the CPU provider is always the fallback.
    """
    import onnxruntime as ort

    key = (file, threads, cuda)
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            opts = ort.SessionOptions()
            opts.enable_cpu_mem_arena = False  # as backend.dfimat.onnx_export.OnnxModel: the arena costs peak memory
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            providers = ["CPUExecutionProvider"]
            if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            _SESSIONS[key] = ort.InferenceSession(str(verified_path(file)), opts, providers=providers)
        return _SESSIONS[key]


# ---------------------------------------------------------------- letterbox (one mapping for every model)

@dataclass(frozen=True)
class Letterbox:
    """The image scaled by ``scale`` and placed at (``left``, ``top``) on a ``width`` × ``height`` canvas."""

    scale: float
    left: int
    top: int
    width: int
    height: int

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Canvas pixel coordinates (..., 2) as (x, y) → image pixel coordinates."""
        offset = np.array([self.left, self.top], np.float32)
        return (np.asarray(xy, np.float32) - offset) / self.scale


def letterbox(image: np.ndarray, width: int, height: int, fill: tuple[int, int, int] = (0, 0, 0)
              ) -> tuple[np.ndarray, Letterbox]:
    """``image`` (H×W×3) scaled to fit ``width`` × ``height`` keeping its aspect, centred, padded with ``fill``."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    # INTER_AREA: the networks see a downscaled photo, and area averaging avoids aliasing on big images.
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    left, top = (width - nw) // 2, (height - nh) // 2
    canvas = np.empty((height, width, 3), image.dtype)
    canvas[:] = np.array(fill, image.dtype)
    canvas[top:top + nh, left:left + nw] = resized
    # The scale actually applied per axis may differ from `scale` by rounding; use the x one (<= 0.5 px off).
    return canvas, Letterbox(nw / w, left, top, width, height)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by non-maximum suppression (cv2.dnn.NMSBoxes wants x, y, w, h)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float32)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(np.float32).tolist(), 0.0, iou)
    return np.asarray(keep, np.int64).reshape(-1)


# ---------------------------------------------------------------- NanoDet

@dataclass(frozen=True)
class Boxes:
    """Detections in image pixels: ``boxes`` (N, 4) x0, y0, x1, y1 float32; ``scores`` (N,) float32."""

    boxes: np.ndarray
    scores: np.ndarray


class NanoDet:
    """NanoDet-m at 416 × 416: person boxes from the COCO detector.

    Input: 1×3×416×416 float32, **BGR**, (pixel − mean) / std with NanoDet's own ImageNet statistics; the graph's
    class outputs are already sigmoid scores. Box outputs are GFL distributions: per cell and side (left, top, right,
    bottom) 11 logits over distances 0..10 strides; the expected distance × stride, measured from the cell centre.
    """

    SIZE = 416
    STRIDES = (8, 16, 32)
    REG_MAX = 10
    PERSON = 0  # COCO class index
    MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
    STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)

    def __init__(self, score_threshold: float = 0.5, nms_iou: float = 0.6, threads: int | None = None,
                 cuda: bool = False) -> None:
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.threads = threads
        self.cuda = cuda

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """H×W×3 uint8 RGB → (1, 3, 416, 416) float32 normalised BGR, and the letterbox."""
        canvas, lb = letterbox(image, self.SIZE, self.SIZE)
        # Padding is black like NanoDet's own warp-affine resize; the network was trained on that.
        bgr = canvas[..., ::-1].astype(np.float32)
        x = (bgr - self.MEAN_BGR) / self.STD_BGR
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), lb

    def __call__(self, image: np.ndarray) -> Boxes:
        x, lb = self.preprocess(image)
        sess = session(NANODET_FILE, self.threads, self.cuda)
        names = [f"{kind}_s{s}" for kind in ("cls", "reg") for s in self.STRIDES]
        outs = dict(zip(names, sess.run(names, {"image": x}), strict=True))
        boxes, scores = self.decode(outs, self.score_threshold)
        keep = nms(boxes, scores, self.nms_iou)
        boxes = lb.to_image(boxes[keep].reshape(-1, 2, 2)).reshape(-1, 4)
        h, w = image.shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        return Boxes(boxes, scores[keep].astype(np.float32))

    @classmethod
    def decode(cls, outputs: dict[str, np.ndarray], score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes on the 416 × 416 canvas before NMS.

        Arguments: ``outputs`` with ``cls_s{8,16,32}`` (1, cells, 80) scores and ``reg_s{8,16,32}`` (1, cells, 44)
        distance logits; cells run row-major over the stride's grid (416 / stride square).
        Returns: boxes (N, 4) x0, y0, x1, y1 and scores (N,).
        """
        all_boxes, all_scores = [], []
        for stride in cls.STRIDES:
            side = cls.SIZE // stride
            scores = outputs[f"cls_s{stride}"][0, :, cls.PERSON]
            cells = np.nonzero(scores >= score_threshold)[0]
            if len(cells) == 0:
                continue
            logits = outputs[f"reg_s{stride}"][0, cells].reshape(-1, 4, cls.REG_MAX + 1)
            prob = np.exp(logits - logits.max(axis=2, keepdims=True))
            prob /= prob.sum(axis=2, keepdims=True)
            dist = (prob * np.arange(cls.REG_MAX + 1, dtype=np.float32)).sum(axis=2) * stride  # l, t, r, b
            # NanoDet-m's priors are the cell centres ((i + 0.5) × stride).
            cx = (cells % side + 0.5) * stride
            cy = (cells // side + 0.5) * stride
            all_boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1))
            all_scores.append(scores[cells])
        if not all_boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        return np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_scores).astype(np.float32)


# ---------------------------------------------------------------- MoveNet multipose

@dataclass(frozen=True)
class Pose:
    """One MoveNet person: ``keypoints`` (17, 3) as x, y (image px), score; ``box`` x0, y0, x1, y1; ``score``."""

    keypoints: np.ndarray
    box: np.ndarray
    score: float


class MoveNet:
    """MoveNet multipose lightning: up to six people with 17 keypoints each.

    Input: 1×H×W×3 int32 RGB in 0..255, H and W multiples of 32 (the long side 256: better than 512 on the held-out
    photos). Output (1, 6, 56): per person 17 × (y, x, score), then ymin, xmin, ymax, xmax, score, all normalised to the
    padded input.
    """

    SIDE = 256
    MULTIPLE = 32

    def __init__(self, score_threshold: float = 0.2, side: int = SIDE, threads: int | None = None,
                 cuda: bool = False) -> None:
        self.score_threshold = score_threshold
        self.side = side
        self.threads = threads
        self.cuda = cuda

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the network input: the long side ``side``, the short one rounded up to a multiple of 32."""
        scale = self.side / max(height, width)
        def up(v: float) -> int:
            return int(np.ceil(v * scale / self.MULTIPLE) * self.MULTIPLE)
        return max(self.MULTIPLE, min(self.side, up(height))), max(self.MULTIPLE, min(self.side, up(width)))

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """H×W×3 uint8 RGB → (1, h, w, 3) int32 and the letterbox."""
        h, w = self.input_size(*image.shape[:2])
        canvas, lb = letterbox(image, w, h)
        return canvas[None].astype(np.int32), lb

    def __call__(self, image: np.ndarray) -> list[Pose]:
        x, lb = self.preprocess(image)
        rows = session(MOVENET_FILE, self.threads, self.cuda).run(["people"], {"image": x})[0][0]
        return self.decode(rows, lb, self.score_threshold, image.shape[:2])

    @staticmethod
    def decode(rows: np.ndarray, lb: Letterbox, score_threshold: float,
               image_hw: tuple[int, int] | None = None) -> list[Pose]:
        """Rows (6, 56) normalised to the padded input → people above ``score_threshold``, in image pixels."""
        people = []
        for row in rows:
            score = float(row[55])
            if score < score_threshold:
                continue
            kp = row[:51].reshape(17, 3)
            canvas_xy = np.stack([kp[:, 1] * lb.width, kp[:, 0] * lb.height], axis=1)
            keypoints = np.concatenate([lb.to_image(canvas_xy), kp[:, 2:3]], axis=1).astype(np.float32)
            ymin, xmin, ymax, xmax = row[51:55]
            corners = np.array([[xmin * lb.width, ymin * lb.height], [xmax * lb.width, ymax * lb.height]])
            box = lb.to_image(corners).reshape(4)
            if image_hw is not None:
                h, w = image_hw
                box = np.clip(box, 0, [w, h, w, h])
            people.append(Pose(keypoints, box.astype(np.float32), score))
        return people


# ---------------------------------------------------------------- BlazePose-full segmentation

@dataclass(frozen=True)
class CropMask:
    """A person's mask on part of the image: ``mask`` float32 (y1 − y0, x1 − x0) probabilities in ``rect``
    (x0, y0, x1, y1, integer image pixels, inside the image); ``flag``: BlazePose's "a person is here" score;
    ``landmarks`` (39, 5) x, y (image px), z, visibility, presence logits as the model gives them."""

    mask: np.ndarray
    rect: tuple[int, int, int, int]
    flag: float
    landmarks: np.ndarray

    def full(self, height: int, width: int) -> np.ndarray:
        """The mask pasted into an H × W float32 zero image."""
        out = np.zeros((height, width), np.float32)
        x0, y0, x1, y1 = self.rect
        out[y0:y1, x0:x1] = self.mask
        return out


class BlazePoseSeg:
    """BlazePose-full on a square crop 1.25 × the box's long side, centred on the box: the segmentation of the person
    in the middle of the crop (1.25: measured best in the note; BlazePose was trained on crops with margin).

    Input: N×256×256×3 float32 RGB / 255. Outputs: ``segmentation`` (N, 256, 256, 1) probabilities, ``landmarks``
    (N, 195) = 39 × (x, y, z, visibility, presence) in crop pixels, ``pose_flag`` (N, 1).
    """

    SIDE = 256
    CROP_SCALE = 1.25

    def __init__(self, crop_scale: float = CROP_SCALE, threads: int | None = None, cuda: bool = False) -> None:
        self.crop_scale = crop_scale
        self.threads = threads
        self.cuda = cuda

    def square(self, box: np.ndarray) -> tuple[int, int, int]:
        """The crop (x0, y0, side) for ``box``, in image pixels; it may reach outside the image."""
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(8, int(round(self.crop_scale * max(x1 - x0, y1 - y0))))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return int(round(cx - side / 2)), int(round(cy - side / 2)), side

    def preprocess(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """Crops (N, 256, 256, 3) float32 in 0..1 for ``boxes`` (N, 4), and each crop's square."""
        h, w = image.shape[:2]
        crops, squares = [], []
        for box in boxes:
            sx, sy, side = self.square(box)
            # Zero (black) outside the image, as MediaPipe's own crops do.
            canvas = np.zeros((side, side, 3), np.uint8)
            ix0, iy0, ix1, iy1 = max(sx, 0), max(sy, 0), min(sx + side, w), min(sy + side, h)
            if ix1 > ix0 and iy1 > iy0:
                canvas[iy0 - sy:iy1 - sy, ix0 - sx:ix1 - sx] = image[iy0:iy1, ix0:ix1]
            interp = cv2.INTER_AREA if side > self.SIDE else cv2.INTER_LINEAR
            crops.append(cv2.resize(canvas, (self.SIDE, self.SIDE), interpolation=interp))
            squares.append((sx, sy, side))
        x = np.stack(crops).astype(np.float32) / 255.0 if crops else np.zeros((0, 256, 256, 3), np.float32)
        return x, squares

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> list[CropMask]:
        """One `CropMask` per box (N, 4) of an H×W×3 uint8 RGB image; each crop runs on its own (batch 1 is as fast per
        crop on CPU and keeps memory flat)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        x, squares = self.preprocess(image, boxes)
        sess = session(BLAZEPOSE_FILE, self.threads, self.cuda)
        out = []
        for i, sq in enumerate(squares):
            seg, lms, flag = sess.run(["segmentation", "landmarks", "pose_flag"], {"image": x[i:i + 1]})
            out.append(self.decode(seg[0, :, :, 0], lms[0], float(flag[0, 0]), sq, image.shape[:2]))
        return out

    @classmethod
    def decode(cls, seg: np.ndarray, landmarks: np.ndarray, flag: float, square: tuple[int, int, int],
               image_hw: tuple[int, int]) -> CropMask:
        """The 256 × 256 crop mask back onto the part of the image the crop covers."""
        sx, sy, side = square
        h, w = image_hw
        x0, y0, x1, y1 = max(sx, 0), max(sy, 0), min(sx + side, w), min(sy + side, h)
        k = side / cls.SIDE
        # Map each rect pixel centre to the crop's continuous coordinates and sample there (bilinear).
        m = np.array([[k, 0, sx + 0.5 * k - 0.5 - x0], [0, k, sy + 0.5 * k - 0.5 - y0]], np.float32)
        if x1 > x0 and y1 > y0:
            mask = cv2.warpAffine(seg.astype(np.float32), m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        else:
            mask = np.zeros((0, 0), np.float32)
        lm = landmarks.reshape(39, 5).astype(np.float32).copy()
        lm[:, 0] = sx + lm[:, 0] * k
        lm[:, 1] = sy + lm[:, 1] * k
        return CropMask(np.clip(mask, 0, 1), (x0, y0, x1, y1), flag, lm)
