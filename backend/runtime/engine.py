"""In-process engine: the single way the rest of the project runs DFIMat-S.

    engine = Engine.load()                      # CUDA if available, else CPU; default weights from models/
    sid = engine.open(image)                    # H x W x 3 uint8 RGB (RGBA / grayscale / uint16 converted)
    alpha = engine.predict(sid, {"box": [x0, y0, x1, y1]})   # H x W float32 in [0, 1]
    alpha = engine.predict(sid, {"clicks": [[x, y, False]]}) # later rounds add to the earlier ones
    engine.reset(sid); engine.close(sid)

Each session encodes its image once (frozen backbone on the letterboxed square) and keeps the prompt history and
the previous ISCN prediction (what the CRM compares new input against). The MRN then refines only the target's
crop, resized so its longer side is at most `mrn_max_side`, and the matte is pasted back: memory stays bounded even
for 24 MP photos.

Focus pass (default on; `Engine.load(focus=False)` or $DFIMAT_FOCUS=0 turns it off; see `backend.runtime.focus`): from the
second round on, or in a first round with a box, when the target (box and positive marks; the coarse mask when there
is no box) is small in the photo, the original image is
cropped around it, that crop is encoded once (cached in the session per region) and the ISCN runs again on it with
all prompts mapped into the crop; the MRN then refines the focused mask. The session's previous prediction stays the whole-image one, so the next round's first pass and the
region choice do not depend on the focus pass. With `focus_hold` a corrective round keeps the last round's region while the
target still fits it (`backend.runtime.focus.held_region`). With `focus_stay` (default) a corrective round whose coarse
mask spread too wide to focus keeps the last round's region while the box and positive marks still fit it
(`backend.runtime.focus.stay_region`), and with `focus_after_box` (default) so does the round after a found person's box
stopped prompting the networks.

Loose boxes (`tightened_box`): when the first ISCN answer fills at most 90 % of the box, the ISCN is asked again
with the box shrunk to that answer, and the shrunk box also places the pose prior's crop; the session keeps the
user's box.

Box support (`box_support`): a user's box bounds the person, so the matte (and the kept prediction) is cut to the box
plus 5 % of its size, unless a positive click or stroke lies beyond it.

Pose prior (default on; `Engine.load(pose_prior=False)` or $DFIMAT_POSE_PRIOR=0 turns it off; `backend.runtime.pose_prior`):
in a first round with a box or positive marks, mediapipe's person mask on crops placed by them joins the ISCN's
coarse mask (added log-odds) and again the MRN's input at its crop's resolution; a mask that holds none of the
positive marks is someone else's and is dropped. Corrective rounds keep joining it at the MRN until a new mark
contradicts it.

Marks hold (default on; `Engine.load(keep_marks=False)` or $DFIMAT_KEEP_MARKS=0 turns it off; see `backend.runtime.marks`):
without a box, parts of the matte that hold no positive mark are dropped; then every click and stroke of the session
is kept on its side of the returned matte, a click in a disk as large as the coarse mask's agreeing region around it
allows (up to a few grid cells), a stroke along its painted width; the MRN, which does not see the marks, had undone
corrective clicks the ISCN had obeyed.

Local corrections (default from a session's fourth round; $DFIMAT_LOCAL_CORRECTIONS=off / all / growth / late; see
`backend.runtime.local`): a corrective click or stroke changes the matte only where the change connects to it, the
previous round's matte comes back elsewhere.

Other people out (default on; `Engine.load(take_out_others=False)` or $DFIMAT_TAKE_OUT_OTHERS=0 turns it off; see
`backend.runtime.others`): in a session with a box and no text, the people the finder found other than the one the matte
selects are taken out of the matte, except anyone a positive click or stroke lies on.

A negative mark takes out the found person under it (default on; $DFIMAT_TAKE_OUT_REFUSED=0 turns it off; see
`backend.runtime.others.take_out_refused`): a find whose mask holds a negative click or stroke and that no positive
mark is near is cut out of the matte, in that round and every later one, once the matte holds at least half of it;
in sessions without a box only (in a box session no positive mark need say which find is the target).

A found person's box for marks (default on; $DFIMAT_CLICK_BOX=0 turns it off; see `backend.runtime.click_box`): in a
session with marks and no box (with or without text), when the first round's positive marks lie on one found
person's mask and the networks' own answer to the marks agrees with it, that person's detector box prompts the
networks as if drawn before the marks, grown to hold later positive marks, until a negative mark lands on that person;
it never bounds the matte.
When the first round's marks lie on nobody found (default on; $DFIMAT_WEAK_BOX=0 turns it off; see
`backend.runtime.weak_box`), a NanoDet box under the finder's floor that holds them, whose BlazePose mask holds them
too, is that person's box for the first round only.

Text grounding (default on; `Engine.load(text_grounding=False)` or $DFIMAT_TEXT_GROUNDING=0 turns it off; see
`backend.runtime.grounding`): while a session's prompts are text only, the people in the photo are found once (by
the finder `EngineOptions.grounding_finder` names), the person the sentence names by side, order, colour, size or
depth (`backend.runtime.sentence`; else the one whose generated description is closest to it) is added as a box for
that round's networks only; the session keeps just the text.

Errors: `backend.dfimat.prompts.PromptError` (ValueError) for bad prompts, `ImageError` (ValueError) for images
that cannot be converted, `SessionError` (KeyError) for unknown or closed sessions.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from backend.dfimat.encoder import Letterbox
from backend.dfimat.model import DFIMatS, load_checkpoint
from backend.dfimat.mrn import input_size as mrn_input_size
from backend.dfimat.prompt_tensors import build_prompt_tensors, collate
from backend.dfimat.prompts import Box, PromptError, PromptHistory, RoundPrompts
from backend.dfimat.selector import select_mask
from backend.runtime import weak_box
from backend.runtime.box_snap import snapped_box
from backend.runtime.click_box import MIN_SHARE, Chosen, grown_box, marked_find, refused
from backend.runtime.focus import (
    FOCUS_CACHE,
    RegionBox,
    full_to_region_grid,
    held_region,
    region_box,
    select_region,
    stay_region,
    target_extent,
)
from backend.runtime.grounding import Candidate, choose, describe
from backend.runtime.local import acts_in, keep_local
from backend.runtime.marks import drop_unmarked_parts, keep_marks, points
from backend.runtime.options import EngineOptions
from backend.runtime.others import FoundPerson, prompted_others, take_out_others, take_out_refused
from backend.runtime.people import Found, detector_box
from backend.runtime.pose_prior import (
    BOX_AVERAGE_PADDINGS,
    MARKS_AVERAGE_CROPS,
    PoseOnCrop,
    agrees_with_all,
    covers_a_positive,
    join_prior,
    mix_prior,
    pose_mask,
    prior_on_rect,
    release_prior,
    with_centred,
)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
# benchmarks/bench_engine.py on the 2-core CPU (docs/experiments.md, "Speed and memory choices"): onnxruntime 79 ms per round vs torch 111 ms. So
# weights that ship with exported graphs (`<weights dir>/onnx/`, stamped with the weights' sha256) run under
# onnxruntime by default; other weights (e.g. fresh training checkpoints) run under torch unless asked.
ONNX_SUBDIR = "onnx"
# Loose boxes (`tightened_box`): the second pass's box is the first answer's extent plus 2 %, and it runs only when
# that keeps at most 90 % of the user's box. Both chosen before measuring.
TIGHTEN_MARGIN = 0.02
TIGHTEN_KEEP = 0.9
# A user's box bounds the person: the matte is cut to the box plus this fraction of its size on every side (so a
# hand or foot that just crosses a tight box's edge survives), unless a positive mark lies beyond that. Set before
# measuring; held-out one-box IoU 0.699 -> 0.707 (docs/experiments.md, "Boxes").
BOX_SUPPORT_MARGIN = 0.05
# First-round pose prior (`backend.runtime.pose_prior`, default on; $DFIMAT_POSE_PRIOR=0 or Engine.load(pose_prior=False)
# turns it off); how it joins the ISCN's mask is `backend.runtime.pose_prior.join_prior`. The pose model runs on the photo
# downscaled to PRIOR_MAX_SIDE (it works at 256 px inside), so a 24 MP photo costs no more.
PRIOR_MAX_SIDE = 1024
# Set before its first measurement: only a clear mismatch (the marks' own answer is mostly someone else than the find)
# keeps the find's box out; an answer that spills onto a neighbour still overlaps its person's find this much.
CLICK_BOX_AGREEMENT = 0.3
# With `click_box_cover`: an answer that holds at least this share of the find's mask is on that person too, however far
# it spilled onto the neighbours beside them (set before measuring: most of the find).
CLICK_BOX_COVER = 0.5

__all__ = ["Engine", "ImageError", "PromptError", "SessionError", "default_weights", "to_rgb_uint8"]


class ImageError(ValueError):
    """The image is not something the engine can turn into H x W x 3 uint8 RGB."""


class SessionError(KeyError):
    """Unknown or already closed session id."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else "unknown session"


def tightened_box(box: Box, coarse: np.ndarray, lb: Letterbox) -> Box | None:
    """``box`` shrunk to the coarse mask's extent (+ `TIGHTEN_MARGIN`), or None when that would keep more than
    `TIGHTEN_KEEP` of its area (the box was already tight) or the mask is empty.

    Measured (docs/experiments.md, "Boxes"): held-out one-box IoU with boxes 15 % larger than tight 0.611 -> 0.629,
    validation 0.802 -> 0.812; tight boxes unchanged (0.698 -> 0.699, 0.862 -> 0.863)."""
    fg = coarse > 0.5
    if not fg.any():
        return None
    ys, xs = np.nonzero(fg)
    cell = lb.size / coarse.shape[0] / lb.scale  # one grid cell in image pixels
    x0, x1, y0, y1 = xs.min() * cell, (xs.max() + 1) * cell, ys.min() * cell, (ys.max() + 1) * cell
    mx, my = TIGHTEN_MARGIN * (x1 - x0), TIGHTEN_MARGIN * (y1 - y0)
    nx0, ny0 = max(box.x0, x0 - mx), max(box.y0, y0 - my)
    nx1, ny1 = min(box.x1, x1 + mx), min(box.y1, y1 + my)
    if nx1 - nx0 < 2 or ny1 - ny0 < 2:
        return None
    if (nx1 - nx0) * (ny1 - ny0) > TIGHTEN_KEEP * (box.x1 - box.x0) * (box.y1 - box.y0):
        return None
    return Box(nx0, ny0, nx1, ny1)


def box_support(history: PromptHistory, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (x0, y0, x1, y1) outside which the matte is background: the user's latest box plus
    `BOX_SUPPORT_MARGIN`; None without a box, or when a positive click or stroke reaches beyond it (the user has
    said the person does not end at the box)."""
    box = history.box
    if box is None:
        return None
    x0, y0, x1, y1 = box.grown(*(BOX_SUPPORT_MARGIN,) * 4).as_list()
    marks = [(c.x, c.y, 0.0) for c in history.clicks if c.positive]
    marks += [(x, y, st.width / 2) for st in history.scribbles if st.positive for x, y in st.points]
    if any(x - r < x0 or x + r > x1 or y - r < y0 or y + r > y1 for x, y, r in marks):
        return None
    return (int(max(0, np.floor(x0))), int(max(0, np.floor(y0))),
            int(min(width, np.ceil(x1))), int(min(height, np.ceil(y1))))


def _cut_grid(grid: np.ndarray, lb: Letterbox, removed: np.ndarray) -> np.ndarray:
    """A copy of ``grid`` (G x G over ``lb``'s model square: the whole image or a focus region) times 1 - ``removed``
    (per pixel of ``lb``'s image, the share of the matte taken out there)."""
    factor = grid.shape[0] / lb.size
    ih, iw = lb.inner
    gh, gw = max(1, round(ih * factor)), max(1, round(iw * factor))
    out = grid.copy()
    out[:gh, :gw] *= 1.0 - cv2.resize(removed.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    return out


def _cut_to(alpha: np.ndarray, rect: tuple[int, int, int, int]) -> None:
    """Zero `alpha` (H x W, in place) outside `rect`."""
    x0, y0, x1, y1 = rect
    alpha[:y0] = 0
    alpha[y1:] = 0
    alpha[:, :x0] = 0
    alpha[:, x1:] = 0


class _MrnPrior(NamedTuple):
    """What the MRN's crop needs to join the pose prior itself: the ISCN's own grid before the grid-level join, the
    prior, and where the letterboxed image (photo or focus region) starts in the photo."""

    own: np.ndarray
    prior: tuple[np.ndarray, float]
    offset: tuple[int, int]


def _overlaps(mask: np.ndarray, grid: np.ndarray, lb: Letterbox, hw: tuple[int, int]) -> tuple[float, float]:
    """IoU of ``mask`` (a photo downscaled to its shape) and the networks' answer ``grid`` (each > 0.5), and the share
    of ``mask`` inside the answer."""
    h, w = hw
    own = lb.square_to_crop(grid, (0, 0, w, h), mask.shape[:2]) > 0.5
    theirs = mask > 0.5
    inter, area = int(np.count_nonzero(own & theirs)), int(np.count_nonzero(theirs))
    union = int(np.count_nonzero(own | theirs))
    return (inter / union if union else 1.0), (inter / area if area else 0.0)


def _coarse_on(grid: np.ndarray, lb: Letterbox, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The G x G coarse mask of `lb` (whole image, or a focus region) sampled per pixel over an image rectangle."""
    ox, oy = lb.region[:2] if isinstance(lb, RegionBox) else (0, 0)
    x0, y0, x1, y1 = rect
    return lb.square_to_crop(grid, (x0 - ox, y0 - oy, x1 - ox, y1 - oy), (y1 - y0, x1 - x0))


def default_weights() -> Path:
    """$DFIMAT_WEIGHTS, else $DFIMAT_MODELS_DIR/dfimat-s/dfimat-s.pt, else the repository's models/ copy."""
    if os.environ.get("DFIMAT_WEIGHTS"):
        return Path(os.environ["DFIMAT_WEIGHTS"])
    if os.environ.get("DFIMAT_MODELS_DIR"):
        return Path(os.environ["DFIMAT_MODELS_DIR"]) / "dfimat-s" / "dfimat-s.pt"
    return REPO / "models" / "dfimat-s" / "dfimat-s.pt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shipped_onnx(weights: Path) -> Path | None:
    """The exported graphs next to `weights` if they were made from exactly this file, else None."""
    root = Path(weights).parent / ONNX_SUBDIR
    stamp = root / "weights.sha256"
    if not stamp.is_file() or not Path(weights).is_file():
        return None
    if not all((root / f"{n}.onnx").is_file() for n in ("backbone", "iscn", "mrn")):
        return None
    return root if stamp.read_text().split()[0] == _sha256(weights) else None


def _onnx_runtime(model: DFIMatS, weights: Path, int8_mrn: bool = False):
    """onnxruntime sessions for `weights`: shipped graphs (with their int8 MRN when `int8_mrn`), else exported once
    into the user cache (float only: the int8 copy needs calibration photos)."""
    from backend.dfimat.onnx_export import OnnxModel, export

    shipped = shipped_onnx(weights)
    if shipped is not None:
        return OnnxModel(shipped, threads=torch.get_num_threads(), int8_mrn=int8_mrn)
    digest = _sha256(weights)[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dfimat" / "onnx" / digest
    if not all((root / f"{n}.onnx").is_file() for n in ("backbone", "iscn", "mrn")):
        export(model, root)
    return OnnxModel(root, threads=torch.get_num_threads())


def to_rgb_uint8(image: object) -> np.ndarray:
    """Accept H x W x 3 uint8 RGB; convert RGBA (alpha dropped), grayscale (H x W or H x W x 1) and uint16."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"image must be H x W, H x W x 3 or H x W x 4, got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ImageError(f"image is too small: {image.shape[1]} x {image.shape[0]}")
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535
        image = image.astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"image dtype must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


@dataclass
class _Session:
    image: np.ndarray
    letterbox: Letterbox
    feats: dict[str, torch.Tensor]
    history: PromptHistory = field(default_factory=PromptHistory)
    prev: np.ndarray | None = None  # ISCN probability of the last round, G x G in model-square space
    # Focus pass: crop encodings by region (insertion order = age) and the last focused prediction with its region,
    # which is the CRM's previous mask when the next round focuses on the same region.
    crops: dict[tuple[int, int, int, int], dict[str, torch.Tensor]] = field(default_factory=dict)
    focus_prev: tuple[tuple[int, int, int, int], np.ndarray] | None = None
    # The people found in the image, described in words (text grounding); None until a text-only round needs them.
    candidates: list[Candidate] | None = None
    # The same finds' masks (cropped, on the finder's picture of `found_shape`) for taking other people out.
    found: list[FoundPerson] | None = None
    found_shape: tuple[int, int] = (0, 0)
    found_by: str = ""  # which finder (`EngineOptions.finder` kinds) made `found`
    found_boxes: list[list[float]] = field(default_factory=list)  # the same finds' boxes in image pixels
    # The first round's pose prior, joined at the MRN's crop in later rounds until a mark contradicts it.
    kept_prior: tuple[np.ndarray, float] | None = None
    # The found person the first round's marks chose and its box (`EngineOptions.click_box`), kept for the session
    # until a negative mark lands on that person.
    click_box: Chosen | None = None
    # Per round, the rules around the networks that shaped its answer (`Engine.rules`).
    rules: list[tuple[str, ...]] = field(default_factory=list)
    others_given: bool = False  # this round's ISCN saw other people (`EngineOptions.others_input`)
    marks_given: bool = False  # this round went to the marks ISCN (`EngineOptions.marks_iscn`)
    # The last returned matte × 255, when the next round's local corrections may need it (`local.acts_in`).
    last_alpha: np.ndarray | None = None

    def nbytes(self) -> int:
        feats = sum(t.numel() * t.element_size() for t in self.feats.values())
        feats += sum(t.numel() * t.element_size() for f in self.crops.values() for t in f.values())
        prev = 0 if self.prev is None else self.prev.nbytes
        prev += 0 if self.focus_prev is None else self.focus_prev[1].nbytes
        prev += 0 if self.kept_prior is None else self.kept_prior[0].nbytes
        prev += sum(p.mask.nbytes for p in self.found or ())
        prev += 0 if self.last_alpha is None else self.last_alpha.nbytes
        return int(self.image.nbytes + feats + prev)


class Engine:
    """Sessions over one loaded DFIMat-S model. All public methods are serialised by a lock."""

    model_name = "dfimat-s"

    def __init__(self, model: DFIMatS, device: torch.device, meta: dict | None = None, onnx=None,
                 options: EngineOptions | None = None) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.meta = meta or {}
        self._onnx = onnx  # backend.dfimat.onnx_export.OnnxModel when running under onnxruntime
        self.runtime = "onnx" if onnx is not None else "torch"
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.RLock()
        self._text = None
        # Replaced (never mutated) when a rule has to be switched off at run time, e.g. mediapipe missing.
        self.options = EngineOptions() if options is None else options
        self._pose: PoseOnCrop | None = None

    @classmethod
    def load(cls, device: str | None = None, weights: str | Path | None = None,
             runtime: str | None = None, focus: bool | None = None,
             text_grounding: bool | None = None, pose_prior: bool | None = None,
             keep_marks: bool | None = None, take_out_others: bool | None = None,
             options: EngineOptions | None = None) -> Engine:
        """Load weights (default: `default_weights()`) onto `device` ("cpu", "cuda"; default CUDA if available).

        runtime: "torch" or "onnx"; default $DFIMAT_RUNTIME, else "onnx" when the weights ship with matching exported
        graphs (`ONNX_SUBDIR`), else "torch". Asking for "onnx" without shipped graphs exports them once into the
        user cache.

        options: every rule's switch (`backend.runtime.options.EngineOptions`); default
        `EngineOptions.from_env()` (the defaults, overridden by $DFIMAT_* variables). The keyword switches focus,
        text_grounding, pose_prior, keep_marks and take_out_others override single fields of it (None keeps them).
        Rules that need mediapipe switch themselves off, with one log line, where it is missing."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        path = Path(weights) if weights is not None else default_weights()
        runtime = runtime or os.environ.get("DFIMAT_RUNTIME") or ("onnx" if shipped_onnx(path) else "torch")
        if runtime not in ("torch", "onnx"):
            raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
        model, meta = load_checkpoint(path, "cpu")
        options = (EngineOptions.from_env() if options is None else options).with_overrides(
            focus=focus, text_grounding=text_grounding, pose_prior=pose_prior, keep_marks=keep_marks,
            take_out_others=take_out_others)
        onnx = _onnx_runtime(model, path, int8_mrn=options.int8_mrn and device == "cpu") if runtime == "onnx" else None
        return cls(model, torch.device(device), meta, onnx, options)

    # -- sessions ---------------------------------------------------------------------------------------------
    def open(self, image: np.ndarray) -> str:
        """Start a session for `image`; encodes it once. Returns the session id."""
        rgb = to_rgb_uint8(image)
        lb = Letterbox(rgb.shape[0], rgb.shape[1], self.model.config.size)
        with self._lock:
            feats = self._encode(rgb, lb)
            sid = uuid.uuid4().hex
            self._sessions[sid] = _Session(image=rgb, letterbox=lb, feats=feats)
        return sid

    def fork(self, sid: str) -> str:
        """A new session on the image of `sid` without encoding it again: same pixels and cached features (never
        written to), no prompts, no previous prediction."""
        with self._lock:
            source = self._get(sid)
            new = uuid.uuid4().hex
            self._sessions[new] = _Session(image=source.image, letterbox=source.letterbox, feats=source.feats,
                                           crops=dict(source.crops), candidates=source.candidates,
                                           found=source.found, found_shape=source.found_shape,
                                           found_by=source.found_by, found_boxes=source.found_boxes)
        return new

    def _encode(self, image: np.ndarray, lb: Letterbox) -> dict[str, torch.Tensor]:
        """Backbone features of `image` (the whole photo or a focus crop) letterboxed by `lb`."""
        square = lb.image_to_square(image, cv2.INTER_AREA)
        x = torch.from_numpy(square).permute(2, 0, 1).unsqueeze(0).float().to(self.device)
        with torch.no_grad():
            return self._onnx.backbone(x) if self._onnx else self.model.backbone(x)

    def _get(self, sid: str) -> _Session:
        try:
            return self._sessions[sid]
        except (KeyError, TypeError):
            raise SessionError(f"unknown or closed session {sid!r}") from None

    def reset(self, sid: str) -> None:
        """Forget the prompts and previous prediction; keep the encoded image."""
        with self._lock:
            s = self._get(sid)
            s.history = PromptHistory()
            s.prev = None
            s.focus_prev = None
            s.kept_prior = None
            s.click_box = None
            s.last_alpha = None
            s.rules = []

    def close(self, sid: str) -> None:
        with self._lock:
            self._get(sid)
            del self._sessions[sid]

    def session_nbytes(self, sid: str) -> int:
        with self._lock:
            return self._get(sid).nbytes()

    # -- prediction -------------------------------------------------------------------------------------------
    def _text_encoder(self):
        if self._text is None:
            from backend.dfimat.text import TextEncoder

            self._text = TextEncoder()
        return self._text

    def _embed_text(self, text: str) -> np.ndarray:
        return self._text_encoder().embed(text)

    def predict(self, sid: str, prompts: dict) -> np.ndarray:
        """Add this round's prompts (image pixel coordinates) and return the H x W float32 alpha in [0, 1]."""
        with self._lock:
            s = self._get(sid)
            h, w = s.image.shape[:2]
            new = RoundPrompts.from_dict(prompts, w, h)
            history = PromptHistory(list(s.history.rounds))
            history.add(new)
            # A grounded box prompts the networks for this round only; the session keeps what the user gave, so a
            # later click corrects the shown prediction instead of fighting a box the user never drew.
            seen, seen_new = history, new
            fired: list[str] = []
            s.others_given = s.marks_given = False
            box = self._grounded_box(s, history)
            implied: Chosen | None = None
            own_first: np.ndarray | None = None  # the marks' own first-round answer, when click_box asked for it
            if box is not None:
                fired.append("text_grounding")
                seen_new = replace(new, box=Box(*box))
                seen = PromptHistory([*s.history.rounds, seen_new])
            elif self.options.click_box and history.box is None and (
                    history.text is None or history.clicks or history.scribbles):
                # With text and marks the marks point at the person; the text stays a prompt beside the box.
                if len(history) == 1:
                    implied, own_first = self._click_box(s, history)
                elif s.click_box is not None and not refused(s.click_box, new, s.image.shape[:2]):
                    implied = s.click_box
                if implied is not None:
                    # As if drawn before the first mark: later rounds are corrections of a box session.
                    fired.append("click_box")
                    if implied.weak:
                        fired.append("weak_box")
                    shown = grown_box(implied.box, history, w, h)
                    seen = PromptHistory([replace(seen.rounds[0], box=shown), *seen.rounds[1:]])
                    seen_new = seen.rounds[-1]
            elif self.options.box_snap and history.box is not None and history.text is None:
                snapped = snapped_box(history.box, self._found_boxes(s))
                if snapped is not None:
                    fired.append("box_snap")
                    seen = PromptHistory([replace(r, box=snapped) if r.box is not None else r for r in seen.rounds])
                    seen_new = seen.rounds[-1]
            # Without the implied box the networks were asked exactly this already.
            coarse = own_first if own_first is not None and implied is None else self._localise(s, seen, seen_new)
            if s.marks_given:
                fired.append("marks_iscn")
            if s.others_given:
                fired.append("others_input")
            # A user's rectangle is looser than the tight boxes the ISCN learned from, and then takes in neighbours:
            # when the first answer fills clearly less than the box, ask again with the box shrunk around it.
            tight = tightened_box(seen.box, coarse, s.letterbox) if seen.box is not None else None
            if tight is not None:
                fired.append("loose_box")
                seen = PromptHistory([replace(r, box=tight) if r.box is not None else r for r in seen.rounds])
                seen_new = seen.rounds[-1]
                coarse = self._localise(s, seen, seen_new)
            # The prior joins a first round, and every text round answered through a found person's box (each such
            # round starts afresh from the text).
            fresh = len(history) == 1 or box is not None
            # The pose model segments the most prominent person of its crop: a loose box's crop also holds the
            # neighbours, so the prior is placed by what the networks saw, i.e. the shrunk box when the second pass ran
            # (realistic-v3 validation, 15 % looser boxes: 0.815 -> 0.829; held-out 0.685 -> 0.682, within noise).
            average = box is None or self.options.grounded_prior_average
            prior = self._pose_prior(s, seen, average) if self.options.pose_prior and fresh else None
            own = coarse
            if prior is not None and self.options.prior_check > 0 and seen.box is not None \
                    and _overlaps(prior[0], own, s.letterbox, s.image.shape[:2])[0] < self.options.prior_check:
                prior = None
                fired.append("prior_skipped")
            if prior is not None:
                fired.append("pose_prior")
                coarse = mix_prior(coarse, prior, s.letterbox)
            # Corrective rounds keep the first round's prior at the MRN (without it the matte lost the detail the
            # user had just seen) until a new mark contradicts it: then the user is correcting the prior itself.
            if fresh:
                late_prior, kept = prior, prior if len(history) == 1 else None
            else:
                kept = s.kept_prior
                if kept is not None and not agrees_with_all(kept[0], new.scaled(kept[1], kept[1])):
                    # The user is correcting the prior: where they point (or, before, everywhere).
                    kept = release_prior(kept, own, s.letterbox, new) if self.options.release_prior else None
                late_prior = kept
                if kept is not None:
                    fired.append("kept_prior")
            # A first round without a box has only the marks and a partial coarse mask to place the region by; the
            # whole-image answer is better there (held-out clicks IoU@1 0.464 -> 0.490; docs/experiments.md, "Focus pass and input size").
            placed = seen.box is not None or len(history) > 1
            held: list[str] = []
            focused = self._focus(s, seen, seen_new, coarse, held) if self.options.focus and placed else None
            if focused is not None:
                fired += ["focus", *held]
            if focused is None:
                at_mrn = None if late_prior is None else _MrnPrior(own, late_prior, (0, 0))
                alpha = self._refine(s.image, s.letterbox, coarse, prior=at_mrn)
            else:
                rb, fine = focused
                at_mrn = None if late_prior is None else _MrnPrior(fine, late_prior, rb.region[:2])
                if prior is not None:
                    fine = mix_prior(fine, prior, rb)
                    focused = (rb, fine)
                x0, y0, x1, y1 = rb.region
                alpha = np.zeros((h, w), np.float32)
                # The region is a view of the original pixels; the MRN writes straight into the full matte.
                self._refine(s.image[y0:y1, x0:x1], rb, fine, out=alpha[y0:y1, x0:x1], prior=at_mrn)
            support = box_support(history, w, h)
            if support is None and implied is not None and (self.options.click_box_support == "all" or (
                    self.options.click_box_support == "corrective" and len(history) > 1)):
                # The find's box holds the person as a drawn box does, grown already to hold the positive marks.
                support = box_support(seen, w, h)
            if support is not None:
                fired.append("box_support")
                _cut_to(alpha, support)
                # The CRM compares the next round with what the user saw, so the grid is cut the same way.
                coarse = coarse.copy()
                _cut_to(coarse, self._grid_rect(support, s.letterbox, coarse.shape[0]))
                if focused is not None:
                    fine = focused[1].copy()
                    _cut_to(fine, self._grid_rect(support, focused[0], fine.shape[0]))
                    focused = (focused[0], fine)
            marks = points(history.merged())
            positives = [(x, y) for x, y, p in marks if p]
            removed: np.ndarray | None = None  # per pixel, the share of the matte the take-out cut
            if self.options.take_out_others and (
                    (history.box is not None and history.text is None)
                    or (history.box is None and positives and (self.options.take_out_marks == "all" or (
                        self.options.take_out_marks == "first" and len(history) == 1)))):
                # Corrective rounds keep the others out (without it the neighbour came back with the first click),
                # except anyone a positive mark asks for.
                off_box = history.box.as_list() if self.options.off_box and history.box is not None else None
                before = alpha.copy() if history.box is None and self.options.take_out_prev else None
                if take_out_others(alpha, self._people_masks(s), s.found_shape, positives,
                                   marked_is_target=history.box is None, off_box=off_box):
                    fired.append("take_out_others")
                    if before is not None:
                        removed = np.where(before > 1e-3, 1.0 - alpha / np.maximum(before, 1e-3), 0.0)
            # Only without a box: there the positive marks say who the target is and keep their find; in a box session
            # nothing does, and a negative click on a spill of the target's own find took the whole person out
            # (held-out mixed sessions, text + box then a negative click: round 2 lost 0.7 IoU in ten of them).
            if self.options.take_out_refused and history.box is None:
                negatives = [(x, y) for x, y, p in marks if not p]
                if negatives and take_out_refused(alpha, self._people_masks(s), s.found_shape, positives, negatives):
                    fired.append("take_out_refused")
            if self.options.keep_marks and (history.clicks or history.scribbles):
                # Without a box the person is where the positive marks are; with one, two parts inside it may both
                # be the person (an arm beyond an occluder), and box support already bounds the matte.
                if history.box is None:
                    drop_unmarked_parts(alpha, history)
                    fired.append("drop_unmarked_parts")
                fired.append("keep_marks")
                view, grid = focused if focused is not None else (s.letterbox, coarse)
                cell = view.size / grid.shape[0] / view.scale  # one grid cell in image pixels
                keep_marks(alpha, history, lambda rect: _coarse_on(grid, view, rect), cell)
            if acts_in(self.options.local_corrections, len(history)) and s.last_alpha is not None \
                    and new.box is None and new.text is None and (new.clicks or new.scribbles):
                if keep_local(alpha, s.last_alpha, [(x, y) for x, y, _ in points(new)],
                              growth_only=self.options.local_corrections == "growth"):
                    fired.append("local_corrections")
            # Commit only after the round succeeded, so a failure leaves the session as it was.
            if removed is not None:
                # The networks compare the next round with their own grid, which still holds the people taken out:
                # cut it the same way, so they see what the user saw. Only the stored copies: this round's marks
                # are kept against the grid the networks gave.
                coarse = _cut_grid(coarse, s.letterbox, removed)
                if focused is not None:
                    x0, y0, x1, y1 = focused[0].region
                    focused = (focused[0], _cut_grid(focused[1], focused[0], removed[y0:y1, x0:x1]))
            s.history, s.prev = history, coarse
            # None unless click_box chose a find that no negative mark has refused (then it fired). A weak box answers
            # the first round only: kept, it held real-photo sessions in for twenty rounds (docs/experiments.md).
            s.click_box = None if implied is not None and implied.weak else implied
            s.last_alpha = (alpha * 255.0 + 0.5).astype(np.uint8) \
                if acts_in(self.options.local_corrections, len(history) + 1) else None
            s.kept_prior = kept
            s.focus_prev = None if focused is None else (focused[0].region, focused[1])
            s.rules.append(tuple(fired))
            return alpha

    def rules(self, sid: str) -> list[tuple[str, ...]]:
        """Per round of the session since it was opened or reset, the names of the rules around the networks that
        shaped the answer, in the order they acted: text_grounding, click_box, weak_box, box_snap, marks_iscn,
        others_input, loose_box, pose_prior, kept_prior, focus, focus_hold, focus_stay, box_support, take_out_others,
        take_out_refused, drop_unmarked_parts, keep_marks, local_corrections (see `EngineOptions` and the module
        doc)."""
        with self._lock:
            return list(self._get(sid).rules)

    def _grounded_box(self, s: _Session, history: PromptHistory) -> list[float] | None:
        """The box of the found person a text-only history describes (`backend.runtime.grounding`), or None: grounding off,
        other prompts given, nobody found, or no description close to the text."""
        if not self.options.text_grounding or history.text is None or history.box is not None or history.clicks \
                or history.scribbles:
            return None
        candidates = self._found_people(s)
        pick = choose(history.text, candidates, self._text_encoder().embed_many, self.options.text_match)
        return None if pick is None else candidates[pick].box

    def _click_box(self, s: _Session, history: PromptHistory
                   ) -> tuple[Chosen | None, np.ndarray | None]:
        """The found person a first round's marks are on and its detector box (`backend.runtime.click_box`); when the
        marks are on no find, the weak detection they confirm (`_weak_find`, with `EngineOptions.weak_box`); else None,
        also when the networks' own answer to the marks is someone else: a find whose mask agrees with it less than
        `CLICK_BOX_AGREEMENT` (IoU; a click on a person the finder missed lands in a neighbour's box) and, with
        `EngineOptions.click_box_cover`, lies less than `CLICK_BOX_COVER` inside it (an answer that spilled onto the
        neighbours still holds its person). Second: that answer (the ISCN grid without a box) when it was computed."""
        finds = self._people_masks(s)
        k = marked_find(history, finds, s.found_shape, s.image.shape[:2])
        if k is None:
            return (self._weak_find(s, history) if self.options.weak_box else None), None
        own = self._localise(s, history, history.rounds[-1])
        agreement, cover = _overlaps(finds[k].paste(s.found_shape), own, s.letterbox, s.image.shape[:2])
        if agreement < CLICK_BOX_AGREEMENT and not (self.options.click_box_cover and cover >= CLICK_BOX_COVER):
            return None, own
        return Chosen(finds[k], Box(*s.found_boxes[k]), s.found_shape), own

    def _weak_find(self, s: _Session, history: PromptHistory) -> Chosen | None:
        """A person the finder left out whom the first round's marks confirm (`backend.runtime.weak_box`): a NanoDet
        box under the finder's floor that holds the positive marks, with BlazePose's mask of it holding them too;
        None when there is none, or the networks cannot run."""
        from backend.runtime.person_nets import BlazePoseSeg, NanoDet

        h, w = s.image.shape[:2]
        positives = [(x, y) for x, y, p in points(history.merged()) if p]
        if not positives or not s.found_shape[0]:
            return None
        try:
            boxes = NanoDet(weak_box.MIN_SCORE, threads=torch.get_num_threads())(s.image)
            tried = weak_box.candidate_boxes(boxes.boxes, boxes.scores, s.found_boxes, positives, MIN_SHARE)
            if not tried:
                return None
            masks = BlazePoseSeg(threads=torch.get_num_threads())(s.image, boxes.boxes[tried])
        except Exception:  # a missing or failing model must not cost the user the round
            log.exception("the weak-box search failed on this image; the marks answer alone")
            return None
        for i, found in zip(tried, masks, strict=True):
            person = weak_box.on_picture(found, (h, w), s.found_shape)
            if marked_find(history, [person], s.found_shape, s.image.shape[:2]) == 0:
                return Chosen(person, Box(*detector_box(boxes.boxes[i], w, h)), s.found_shape, weak=True)
        return None

    def _pose_prior(self, s: _Session, history: PromptHistory,
                    average: bool = True) -> tuple[np.ndarray, float] | None:
        """mediapipe's mask of the prompted person on the photo downscaled by f, and f; None without a box or
        positive mark, without mediapipe, or when no crop holds a person. ``average``: a box alone is segmented on
        three crops and the masks averaged (`BOX_AVERAGE_PADDINGS`), else on its one crop."""
        prompts = history.merged()
        if prompts.box is None and not any(p for _, _, p in points(prompts)):
            return None
        if self._pose is None:
            from backend.runtime.people import pose_detector

            try:
                self._pose = pose_detector().on_crop()
            except RuntimeError as exc:
                log.warning("the pose prior is off: %s", exc)
                self.options = self.options.with_overrides(pose_prior=False)
                return None
        h, w = s.image.shape[:2]
        f = min(1.0, PRIOR_MAX_SIDE / max(h, w))
        small = cv2.resize(s.image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
            if f < 1.0 else s.image
        pose = self._pose
        try:
            mask = pose_mask(prompts.scaled(f, f), small.shape[1], small.shape[0], lambda r: pose(small, r),
                             BOX_AVERAGE_PADDINGS if average else (), MARKS_AVERAGE_CROPS)
        except Exception:  # a native model failing on one image must not cost the user the round
            log.exception("the pose prior failed on this image; the ISCN answers alone")
            return None
        if prompts.box is not None and (self.options.box_prior_blend
                                        or (mask.max() <= 0.5 and self.options.box_prior_fallback)):
            # mediapipe's own detector finds nobody in the crops of a person cut by the frame, seen from behind or in
            # a crowd, and takes the most prominent person of a shared crop: BlazePose segments whoever is centred.
            mask = with_centred(mask, self._centred_person(small, prompts.box.scaled(f, f) if f < 1.0 else prompts.box))
        # The pose model segments the most prominent person of a crop: a mask that holds none of the user's positive
        # marks is someone else (a click on a small person beside a large one), and must not outvote the ISCN.
        if any(p for _, _, p in points(prompts)) and not covers_a_positive(mask, prompts.scaled(f, f)):
            return None
        return (mask, f) if mask.max() > 0.5 else None

    @staticmethod
    def _centred_person(image: np.ndarray, box: Box) -> np.ndarray:
        """BlazePose-full's mask of the person centred on ``box`` (image pixels), as an H x W float32 mask; zeros
        when the person networks cannot run."""
        from backend.runtime.person_nets import BlazePoseSeg

        h, w = image.shape[:2]
        try:
            (found,) = BlazePoseSeg(threads=torch.get_num_threads())(image, np.array([box.as_list()], np.float32))
        except Exception:  # a missing or failing model must not cost the user the round
            log.exception("the BlazePose prior failed on this image")
            return np.zeros((h, w), np.float32)
        return found.full(h, w)

    def _found_people(self, s: _Session) -> list[Candidate]:
        """The people in the session's image, found and described once (an empty list without mediapipe)."""
        if s.candidates is None:
            found = self._find(s, self.options.grounding_finder, tiles=self.options.finder_tiles,
                               faces=self.options.finder_faces, paint_known=self.options.tiles_paint_known)
            if found is not None:
                s.candidates = describe(found.small, found.people)
        return s.candidates or []

    def _people_masks(self, s: _Session) -> list[FoundPerson]:
        """The found people's masks, for taking others out of a box's matte: the text finder's when it ran, else the
        whole-frame passes alone (4x cheaper than with corner crops and face seeds, and as good for this: model
        card, "Other people out of a box's matte")."""
        if s.found is None or s.found_by != self.options.finder:
            self._find(s, self.options.finder, tiles=False, faces=False)
        return s.found or []

    def _found_boxes(self, s: _Session) -> list[list[float]]:
        """The boxes of the people finder's whole-frame finds (the same finds the take-out uses)."""
        self._people_masks(s)
        return s.found_boxes

    def people_in(self, sid: str) -> list[list[float]]:
        """Boxes of everyone the people finder (`EngineOptions.finder`) sees in the session's image. The finds stay
        in the session, so the take-out in the rounds that follow (one per person in the every-person split) does not
        run the finder again."""
        with self._lock:
            s = self._get(sid)
            if s.found is None or s.found_by != self.options.finder:
                nets = {} if self.options.finder == "mediapipe" else {"net_tiles": self.options.every_person_tiles}
                found = self._find(s, self.options.finder, tiles=self.options.finder_tiles,
                                   faces=self.options.finder_faces, paint_known=self.options.tiles_paint_known,
                                   two_poses=self.options.keep_two_poses or self.options.split_two_poses, **nets)
                s.found_boxes = [] if found is None else [box for box, _ in found.people]
            return list(s.found_boxes)

    def _find(self, s: _Session, kind: str, two_poses: bool | None = None, **kw: bool) -> Found | None:
        """Run the people finder on the session's image and keep its masks in the session; None when it cannot run
        (mediapipe missing: its users are switched off) or fails on this image (nobody found). ``two_poses``: the
        finder's `keep_two_poses` (None: the option's)."""
        from backend.runtime.people import people_finder

        if two_poses is None:
            two_poses = self.options.keep_two_poses
        try:
            detector = people_finder(kind, two_poses, self.options.detector_boxes)
        except RuntimeError as exc:  # mediapipe missing: the networks answer alone
            log.warning("text grounding and taking other people out are off: %s", exc)
            self.options = self.options.with_overrides(text_grounding=False, take_out_others=False)
            return None
        try:
            found = detector.find(s.image, **kw)
        except Exception:  # a native finder failing on one image must not cost the user the round
            log.exception("the people finder failed on this image; the networks answer alone")
            s.candidates, s.found, s.found_by, s.found_boxes = [], [], kind, []
            return None
        s.found = [FoundPerson.from_mask(mask) for _, mask in found.people]
        s.found_boxes = [box for box, _ in found.people]
        s.found_shape, s.found_by = found.small.shape[:2], kind
        return found

    def _localise(self, s: _Session, history: PromptHistory, new: RoundPrompts,
                  view: tuple[dict[str, torch.Tensor], Letterbox, np.ndarray | None] | None = None) -> np.ndarray:
        """ISCN probability on the G x G grid of the whole image's square, or of `view` = (features, letterbox,
        previous prediction) of a focus region. Both passes go through here so there is one ISCN call site."""
        feats, lb, prev_map = view if view is not None else (s.feats, s.letterbox, s.prev)
        size = self.model.config.size
        g = size // 4
        marks_iscn = self._marks_iscn(history)
        first = len(history) == 1
        mode = self.options.others_input if marks_iscn is None else self.options.marks_others
        others = self._others_grid(s, history, lb, g) if mode == "all" or (mode == "first" and first) else None
        s.others_given |= others is not None
        s.marks_given |= marks_iscn is not None
        tensors = build_prompt_tensors(history, new, lb, self._embed_text, others)
        if isinstance(lb, RegionBox) and len(tensors.points):
            # Prompt points outside the crop (e.g. a negative click on someone far away) have no features to sample
            # there; their dense marks are already clipped away by drawing.
            inside = np.all((tensors.points >= 0) & (tensors.points < size), axis=1)
            tensors.points, tensors.kinds = tensors.points[inside], tensors.kinds[inside]
        batch = {k: v.to(self.device) for k, v in collate([tensors], size).items()}
        has_prev = torch.tensor([prev_map is not None], device=self.device)
        prev = torch.zeros(1, 1, g, g, device=self.device)
        if prev_map is not None:
            prev[0, 0] = torch.from_numpy(prev_map).to(self.device)
        with torch.no_grad():
            iscn = marks_iscn or (self._onnx.iscn if self._onnx else self.model.iscn)
            masks, logits = iscn(feats, batch, prev, has_prev)
            prob = select_mask(self.model.selector, masks, logits, batch["dense"], prev, has_prev).sigmoid()[0]
        return prob.float().cpu().numpy()

    def _marks_iscn(self, history: PromptHistory):
        """The marks ISCN (module or graph) when this round is one for it (`EngineOptions.marks_iscn`: a session
        without box or text, in its first or every round) and the weights carry one, else None."""
        mode = self.options.marks_iscn
        if mode == "off" or (mode == "first" and len(history) != 1) or history.box is not None \
                or history.text is not None:
            return None
        if self._onnx is not None:
            return self._onnx.iscn_marks if self._onnx.has_iscn_marks else None
        return self.model.iscn_marks

    def _others_grid(self, s: _Session, history: PromptHistory, lb: Letterbox, g: int) -> np.ndarray | None:
        """The found people the prompts do not point at, sampled at the cell centres of `lb`'s G x G grid."""
        people = self._people_masks(s)
        box = history.box.as_list() if history.box is not None else None
        marks = points(history.merged())
        mask = prompted_others(people, s.found_shape, s.image.shape[:2], box, [(x, y) for x, y, p in marks if p],
                               [(x, y) for x, y, p in marks if not p])
        if mask is None:
            return None
        centres = (np.arange(g, dtype=np.float32) + 0.5) * (lb.size / g)
        xx, yy = np.meshgrid(centres, centres)
        xy = lb.to_image(np.stack([xx.ravel(), yy.ravel()], 1))
        (ph, pw), (h, w) = mask.shape, s.image.shape[:2]
        col, row = np.floor(xy[:, 0] * (pw / w)).astype(int), np.floor(xy[:, 1] * (ph / h)).astype(int)
        inside = (col >= 0) & (col < pw) & (row >= 0) & (row < ph)
        out = np.zeros(g * g, np.float32)
        out[inside] = mask[row[inside], col[inside]]
        return out.reshape(g, g)

    def _focus(self, s: _Session, history: PromptHistory, new: RoundPrompts, coarse: np.ndarray,
               held: list[str]) -> tuple[RegionBox, np.ndarray] | None:
        """Second ISCN pass on a crop around the target; None when the target is already large in the photo.
        Appends "focus_hold" to ``held`` when the round kept the last round's region (`held_region`), "focus_stay" when
        it kept focusing there instead of falling back to the whole image, or instead of moving off a found person's box
        that no longer prompts (`stay_region`, `focus_after_box`)."""
        h, w = s.image.shape[:2]
        extent = target_extent(history, coarse, s.letterbox)
        region = select_region(extent, h, w)
        box_ended = history.box is None and bool(s.rules) and "click_box" in s.rules[-1]
        if (region is None or (box_ended and self.options.focus_after_box)) and self.options.focus_stay \
                and s.focus_prev is not None:
            kept = stay_region(s.focus_prev[0], target_extent(history, None, s.letterbox))
            if kept is not None:
                region = kept
                held.append("focus_stay")
        if region is None:
            return None
        if self.options.focus_hold and s.focus_prev is not None:
            kept = held_region(s.focus_prev[0], extent, region)
            if kept != region:
                held.append("focus_hold")
                region = kept
        rb = region_box(region, self.model.config.size)
        feats = s.crops.get(region)
        if feats is None:
            x0, y0, x1, y1 = region
            feats = self._encode(s.image[y0:y1, x0:x1], rb)
            while len(s.crops) >= FOCUS_CACHE:
                s.crops.pop(next(iter(s.crops)))
            s.crops[region] = feats
        # The CRM compares this round with what the user saw last: the focused mask if it was on this region, else
        # the whole-image prediction resampled into the crop.
        if s.focus_prev is not None and s.focus_prev[0] == region:
            prev = s.focus_prev[1]
        elif s.prev is not None:
            prev = full_to_region_grid(s.prev, s.letterbox, rb)
        else:
            prev = None
        return rb, self._localise(s, history, new, (feats, rb, prev))

    @staticmethod
    def _grid_rect(rect: tuple[int, int, int, int], lb: Letterbox, grid: int) -> tuple[int, int, int, int]:
        """An image pixel rectangle as the cells of `lb`'s G x G grid (whole image or focus region) it touches."""
        (x0, y0), (x1, y1) = lb.to_model(np.array([rect[:2], rect[2:]], np.float32)) * (grid / lb.size)
        return (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))), max(0, int(np.ceil(x1))),
                max(0, int(np.ceil(y1))))

    def _crop_for(self, coarse: np.ndarray, lb: Letterbox) -> tuple[int, int, int, int] | None:
        fg = coarse > 0.5
        if not fg.any():
            return None
        ys, xs = np.nonzero(fg)
        cell = lb.size / coarse.shape[0]
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) * cell / lb.scale
        m = self.model.config.crop_margin
        bw, bh = box[2] - box[0], box[3] - box[1]
        pad = max(m * max(bw, bh), 2 * cell / lb.scale)
        x0, y0 = int(max(0, np.floor(box[0] - pad))), int(max(0, np.floor(box[1] - pad)))
        x1, y1 = int(min(lb.width, np.ceil(box[2] + pad))), int(min(lb.height, np.ceil(box[3] + pad)))
        return x0, y0, x1, y1

    def _refine(self, image: np.ndarray, lb: Letterbox, coarse: np.ndarray,
                out: np.ndarray | None = None, prior: _MrnPrior | None = None) -> np.ndarray:
        """MRN on the target's crop; everything outside the crop is background. `image` is what `lb` letterboxes (the
        photo, or a focus region of it, with `out` the matching zeroed view of the full matte). `coarse` places the
        crop; with a `prior` the MRN's mask is the ISCN's own joined with the prior at the crop's resolution."""
        h, w = image.shape[:2]
        alpha = np.zeros((h, w), np.float32) if out is None else out
        crop = self._crop_for(coarse, lb)
        if crop is None:
            return alpha
        x0, y0, x1, y1 = crop
        cw, ch = x1 - x0, y1 - y0
        mw, mh = mrn_input_size(cw, ch, self.model.config.mrn_max_side)
        region = image[y0:y1, x0:x1]
        small = cv2.resize(region, (mw, mh), interpolation=cv2.INTER_AREA if mw < cw else cv2.INTER_LINEAR)
        mask = lb.square_to_crop(coarse, crop, (mh, mw))
        if prior is not None:
            ox, oy = prior.offset
            on_crop = prior_on_rect(prior.prior, (ox + x0, oy + y0, ox + x1, oy + y1), (mh, mw))
            mask = join_prior(lb.square_to_crop(prior.own, crop, (mh, mw)), on_crop)
        x = np.concatenate([small.astype(np.float32) / 255.0, np.clip(mask, 0, 1)[..., None]], axis=2)
        x = torch.from_numpy(x.transpose(2, 0, 1)).unsqueeze(0).to(self.device)
        with torch.no_grad():
            mrn = self._onnx.mrn if self._onnx else self.model.mrn
            out = mrn(x)["alpha"][0, 0].float().cpu().numpy()
        alpha[y0:y1, x0:x1] = cv2.resize(out, (cw, ch), interpolation=cv2.INTER_LINEAR)
        return np.clip(alpha, 0.0, 1.0, out=alpha)
