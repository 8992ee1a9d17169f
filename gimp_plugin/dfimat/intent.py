"""Turn what the user did with GIMP's own tools into DFIMat prompts (pure Python, no GIMP, no numpy).

The GIMP entry module reads the image into the plain data classes below; everything here is testable
anywhere. Coordinates: GIMP's selection and paths live on the canvas, while the backend session holds the
active layer's pixels, so every prompt is shifted by that layer's offsets and clipped to its size.

Multi-round refinement: the backend keeps a prompt history per session and its contrastive reasoning compares
each *new* input with the previous prediction, so a re-run must send only what the user added since the last
run. ``RoundState`` remembers what was sent (it is stored in a parasite on the target layer) and
``next_round`` computes the difference. After a run with selection output the selection *is* the matte; the
state keeps its fingerprint so that the next run does not mistake the matte's bounds for a new box.

The state also keeps a fingerprint of the result the run wrote (layer mask or selection). The parasite is not
undoable, so after Ctrl+Z (or a hand edit) it still describes the undone round; ``last_result_changed`` notices
that the result is gone and ``plan_round`` then starts the session over from what the image shows now.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# Soft brush edges leave faint alpha; only clearly painted pixels count as a stroke.
STROKE_ALPHA_THRESHOLD = 64
PATH_SCRIBBLE_WIDTH = 5.0
STATE_VERSION = 1


class IntentError(ValueError):
    """The image holds no usable prompt; the message tells the user what to do."""


@dataclass(frozen=True)
class Rect:
    """A layer's place on the canvas: offsets and size in pixels."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"empty rectangle {self.width}x{self.height}")


@dataclass(frozen=True)
class PathStroke:
    """One stroke of a GIMP path: its anchors and an interpolated polyline (canvas coordinates)."""

    anchors: tuple[tuple[float, float], ...]
    polyline: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class PathInfo:
    name: str
    strokes: tuple[PathStroke, ...]


@dataclass(frozen=True)
class StrokeLayer:
    """A layer the user paints prompts on ("DFIMat +" / "DFIMat -"): one alpha byte per pixel, row-major."""

    name: str
    item_id: int
    rect: Rect
    alpha: bytes

    def __post_init__(self) -> None:
        if len(self.alpha) != self.rect.width * self.rect.height:
            raise ValueError(
                f"stroke layer {self.name!r}: {len(self.alpha)} alpha bytes for "
                f"{self.rect.width}x{self.rect.height} pixels"
            )


@dataclass(frozen=True)
class StrokeMask:
    """Painted pixels of one stroke layer in target-layer coordinates, cropped to their bounding box (0/255)."""

    source_id: int
    positive: bool
    x: int
    y: int
    width: int
    height: int
    data: bytes

    def to_prompt(self) -> dict:
        return {
            "positive": self.positive, "x": self.x, "y": self.y, "width": self.width, "height": self.height,
            "mask": self.data,
        }


@dataclass
class Intent:
    """Everything the image currently says, in target-layer coordinates."""

    box: list[float] | None = None
    clicks: list[list] = field(default_factory=list)
    scribbles: list[dict] = field(default_factory=list)
    stroke_masks: list[StrokeMask] = field(default_factory=list)
    text: str | None = None
    notes: list[str] = field(default_factory=list)
    # True when the selection is the matte a previous run wrote: ``box`` is then that run's box, not its bounds.
    selection_is_matte: bool = False

    def is_empty(self) -> bool:
        return not (self.box or self.clicks or self.scribbles or self.stroke_masks or self.text)

    def to_prompts(self) -> dict:
        return {
            "box": self.box, "clicks": self.clicks, "scribbles": self.scribbles, "text": self.text,
            "stroke_masks": [m.to_prompt() for m in self.stroke_masks],
        }


# --- names -------------------------------------------------------------------------------------------------

_STROKE_LAYER = re.compile(r"^\s*dfimat\s*(?P<sign>[+\-\u2212\u2013]|pos\w*|neg\w*|fg|bg)", re.IGNORECASE)
_NEGATIVE_PATH = re.compile(r"^\s*(?:[\-\u2212\u2013]|bg|background)", re.IGNORECASE)
# Names GIMP (or a file import) gives layers by itself: never a description of a person.
_DEFAULT_LAYER_NAME = re.compile(
    r"^(?:background|layer|pasted layer|clipboard|new layer|copy|untitled|floating selection|"
    r"(?:layer|background|pasted layer) copy)(?:\s*#?\d+)?(?:\s+copy)*(?:\s*#\d+)?$",
    re.IGNORECASE,
)
_FILE_NAME = re.compile(r"\.(?:jpe?g|png|tiff?|webp|xcf|bmp|gif|heic|avif|exr|raw|cr2|nef|psd|kra)$", re.IGNORECASE)
# "Split People into Layers" names its layers "<name> – person N": a label, not a description.
_SPLIT_LAYER_NAME = re.compile(r"\s[\u2013-]\s*person\s+\d+$", re.IGNORECASE)
_PERSON_WORDS = frozenset(
    "person people man woman boy girl child kid baby adult player dancer bride groom lady guy".split()
)


def stroke_layer_polarity(name: str) -> bool | None:
    """True for a "DFIMat +" (or bare "DFIMat") layer, False for "DFIMat -", None for any other layer."""
    if name.strip().lower() == "dfimat":
        return True  # a bare "DFIMat" layer means "this is the person", as in the Krita plug-in
    m = _STROKE_LAYER.match(name)
    if not m:
        return None
    sign = m.group("sign").lower()
    return sign == "+" or sign.startswith("pos") or sign == "fg"


def path_is_positive(name: str) -> bool:
    """Paths are positive unless their name starts with "-", "bg" or "background"."""
    return not _NEGATIVE_PATH.match(name)


def text_from_layer_name(name: str) -> str | None:
    """The layer name as a text prompt when it reads like a description ("woman in the red coat")."""
    text = " ".join(name.split())
    if not text or _DEFAULT_LAYER_NAME.match(text) or _FILE_NAME.search(text) or _SPLIT_LAYER_NAME.search(text):
        return None
    if stroke_layer_polarity(text) is not None:
        return None
    words = re.findall(r"[^\W\d_]+", text)
    if len(words) >= 2 and sum(len(w) for w in words) >= 6:
        return text
    if len(words) == 1 and words[0].lower() in _PERSON_WORDS and len(text) == len(words[0]):
        return text
    return None


# --- geometry ----------------------------------------------------------------------------------------------


def selection_box(bounds: Sequence[int] | None, layer: Rect) -> list[float] | None:
    """Selection bounds (canvas x1, y1, x2, y2, exclusive ends) → box in layer coordinates.

    None when there is no selection or it covers the whole layer (Select All means "no box").
    """
    if bounds is None:
        return None
    x1, y1, x2, y2 = (int(v) for v in bounds)
    bx0, by0 = max(x1 - layer.x, 0), max(y1 - layer.y, 0)
    bx1, by1 = min(x2 - layer.x, layer.width), min(y2 - layer.y, layer.height)
    if bx1 <= bx0 or by1 <= by0:
        raise IntentError(
            "The selection does not overlap the active layer: select a rectangle around the person on that "
            "layer, or select nothing (Select → None)."
        )
    if (bx0, by0, bx1, by1) == (0, 0, layer.width, layer.height):
        return None
    return [float(bx0), float(by0), float(bx1), float(by1)]


def _to_layer(point: Sequence[float], layer: Rect) -> tuple[float, float] | None:
    x, y = float(point[0]) - layer.x, float(point[1]) - layer.y
    if not (0 <= x < layer.width and 0 <= y < layer.height):
        return None
    return x, y


def path_prompts(paths: Iterable[PathInfo], layer: Rect) -> tuple[list[list], list[dict], list[str]]:
    """Single-anchor strokes → clicks, longer strokes → scribbles; returns (clicks, scribbles, notes)."""
    clicks: list[list] = []
    scribbles: list[dict] = []
    notes: list[str] = []
    for path in paths:
        positive = path_is_positive(path.name)
        for stroke in path.strokes:
            if len(stroke.anchors) == 1:
                p = _to_layer(stroke.anchors[0], layer)
                if p is None:
                    notes.append(f"path {path.name!r}: a point outside the active layer was ignored")
                else:
                    clicks.append([round(p[0], 2), round(p[1], 2), positive])
                continue
            line = stroke.polyline or stroke.anchors
            points = [p for p in (_to_layer(q, layer) for q in line) if p is not None]
            if len(points) < len(line):
                notes.append(f"path {path.name!r}: the part outside the active layer was ignored")
            if not points:
                continue
            scribbles.append({
                "points": [[round(x, 2), round(y, 2)] for x, y in points],
                "positive": positive,
                "width": PATH_SCRIBBLE_WIDTH,
            })
    return clicks, scribbles, notes


_BINARIZE = bytes(255 if v >= STROKE_ALPHA_THRESHOLD else 0 for v in range(256))


def _row_extent(row: bytes) -> tuple[int, int] | None:
    # lstrip/rstrip run in C, which keeps a 24 MP stroke layer well under a second without numpy.
    left = len(row) - len(row.lstrip(b"\0"))
    if left == len(row):
        return None
    return left, len(row.rstrip(b"\0"))


def crop_mask(data: bytes, width: int, height: int) -> tuple[int, int, int, int, bytes] | None:
    """Bounding box (x, y, w, h) and cropped bytes of the non-zero pixels of a 1-byte mask, or None."""
    x0, x1, y0, y1 = width, 0, None, 0
    for row_index in range(height):
        extent = _row_extent(data[row_index * width:(row_index + 1) * width])
        if extent is None:
            continue
        if y0 is None:
            y0 = row_index
        y1 = row_index + 1
        x0, x1 = min(x0, extent[0]), max(x1, extent[1])
    if y0 is None:
        return None
    w = x1 - x0
    rows = [data[r * width + x0:r * width + x1] for r in range(y0, y1)]
    return x0, y0, w, y1 - y0, b"".join(rows)


def sub_rect(data: bytes, width: int, x: int, y: int, w: int, h: int) -> bytes:
    """The (x, y, w, h) window of a 1-byte-per-pixel raster ``width`` pixels wide."""
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or (y + h) * width > len(data):
        raise ValueError(f"window {x},{y} {w}x{h} is outside a raster {width} pixels wide")
    return b"".join(data[r * width + x:r * width + x + w] for r in range(y, y + h))


def stroke_mask(layer: StrokeLayer, target: Rect) -> StrokeMask | None:
    """The painted pixels of a stroke layer, in target-layer coordinates; None when nothing is painted there."""
    positive = stroke_layer_polarity(layer.name)
    if positive is None:
        raise ValueError(f"{layer.name!r} is not a stroke layer name")
    # Clip the stroke layer to the target layer first so strokes off the target cost nothing.
    left, top = max(layer.rect.x, target.x), max(layer.rect.y, target.y)
    right = min(layer.rect.x + layer.rect.width, target.x + target.width)
    bottom = min(layer.rect.y + layer.rect.height, target.y + target.height)
    if right <= left or bottom <= top:
        return None
    sw = layer.rect.width
    cx0, cx1 = left - layer.rect.x, right - layer.rect.x
    rows = [
        layer.alpha[r * sw + cx0:r * sw + cx1].translate(_BINARIZE)
        for r in range(top - layer.rect.y, bottom - layer.rect.y)
    ]
    cropped = crop_mask(b"".join(rows), right - left, bottom - top)
    if cropped is None:
        return None
    x, y, w, h, data = cropped
    return StrokeMask(layer.item_id, positive, left - target.x + x, top - target.y + y, w, h, data)


def build_intent(
    target: Rect,
    selection_bounds: Sequence[int] | None = None,
    paths: Iterable[PathInfo] = (),
    stroke_layers: Iterable[StrokeLayer] = (),
    dialog_text: str | None = None,
    layer_name: str | None = None,
    state: RoundState | None = None,
    read_selection: Callable[[], bytes] | None = None,
) -> Intent:
    """Collect every prompt the image holds for the target layer (any mix of them).

    ``state`` and ``read_selection`` (the selection's "Y u8" bytes inside ``selection_bounds``) let a selection
    that is still the matte of the last run stand for that run's box instead of becoming a new one.
    """
    own = read_selection is not None and is_own_selection(state, selection_bounds, read_selection)
    if own:
        intent = Intent(box=state.box, selection_is_matte=True)
    else:
        intent = Intent(box=selection_box(selection_bounds, target))
    intent.clicks, intent.scribbles, intent.notes = path_prompts(paths, target)
    for layer in stroke_layers:
        mask = stroke_mask(layer, target)
        if mask is not None:
            intent.stroke_masks.append(mask)
    text = " ".join((dialog_text or "").split())
    intent.text = text or (text_from_layer_name(layer_name) if layer_name else None)
    return intent


EMPTY_PROMPT_HELP = (
    "DFIMat needs a prompt: draw a rectangle selection around the person, add points or strokes with the "
    "Paths tool, paint on a layer named \"DFIMat +\" (person) or \"DFIMat -\" (not the person), or type a "
    "description."
)


def require_prompt(intent: Intent) -> Intent:
    if intent.is_empty():
        raise IntentError(EMPTY_PROMPT_HELP)
    return intent


BATCH_PROMPT_HELP = (
    "Batch masks need one prompt for all layers: a rectangle selection around the person, points or strokes "
    "drawn with the Paths tool, and/or a description."
)
BATCH_STROKES_NOTE = (
    "the strokes on the \"DFIMat +/-\" layers were not used: batch masks take the selection box, paths and "
    "the description; refine one layer with its strokes through DFIMat Select Person"
)


def batch_prompts(target: Rect, selection_bounds: Sequence[int] | None, paths: Iterable[PathInfo],
                  text: str | None) -> tuple[dict, list[str]]:
    """One batch item's prompts, the shared box and path points/strokes shifted onto this layer, plus notes.

    Batch items are matted in one-shot backend sessions whose prompts carry no stroke masks (the protocol's
    batch takes box, clicks, scribbles and text), so stroke layers are left to ``batch_stroke_note``. The layer
    name is not read as text either: one prompt is meant for all layers.
    """
    intent = build_intent(target, selection_bounds, paths, (), dialog_text=text)
    if intent.is_empty():
        raise IntentError(BATCH_PROMPT_HELP)
    prompts = intent.to_prompts()
    del prompts["stroke_masks"]
    return prompts, intent.notes


def batch_stroke_note(layer_names: Iterable[str]) -> str | None:
    """What to tell the user when the image has "DFIMat ±" stroke layers that a batch cannot use."""
    return BATCH_STROKES_NOTE if any(stroke_layer_polarity(n) is not None for n in layer_names) else None


# --- rounds ------------------------------------------------------------------------------------------------


@dataclass
class RoundState:
    """What was already sent to a backend session for one target layer."""

    session: str
    box: list[float] | None = None
    text: str | None = None
    clicks: list[str] = field(default_factory=list)
    scribbles: list[str] = field(default_factory=list)
    strokes: dict[str, dict] = field(default_factory=dict)
    # Fingerprint (``selection_print``) of the selection a run wrote, kept while that selection stays in place.
    selection: list | None = None
    # Fingerprint (``mask_print``) of the layer mask the last run wrote; None after a selection output.
    mask: list | None = None

    def to_bytes(self) -> bytes:
        return json.dumps({
            "v": STATE_VERSION, "session": self.session, "box": self.box, "text": self.text,
            "clicks": self.clicks, "scribbles": self.scribbles, "strokes": self.strokes,
            "selection": self.selection, "mask": self.mask,
        }).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> RoundState | None:
        """Parse a stored state; anything unreadable (older version, damaged parasite) means "no state"."""
        if not raw:
            return None
        try:
            d = json.loads(raw.decode())
            if d.get("v") != STATE_VERSION or not isinstance(d.get("session"), str):
                return None
            selection, mask = d.get("selection"), d.get("mask")
            return cls(d["session"], d.get("box"), d.get("text"), list(d.get("clicks", [])),
                       list(d.get("scribbles", [])), dict(d.get("strokes", {})),
                       selection if isinstance(selection, list) else None,
                       mask if isinstance(mask, list) else None)
        except (ValueError, AttributeError, TypeError):
            return None


def selection_print(bounds: Sequence[int] | None, mask: bytes) -> list | None:
    """Fingerprint of a selection: its bounds (canvas x1, y1, x2, y2) and a hash of its bytes inside them.

    The bounds alone would also match a rectangle the user happens to draw around the matte; the hash makes a
    match mean "this very selection".
    """
    if bounds is None:
        return None
    return [*(int(v) for v in bounds), hashlib.blake2b(mask, digest_size=16).hexdigest()]


def is_own_selection(state: RoundState | None, bounds: Sequence[int] | None,
                     read_selection: Callable[[], bytes]) -> bool:
    """True when the current selection is still the one the last run wrote (pixels read only if bounds match)."""
    stored = state.selection if state is not None else None
    if not stored or bounds is None or [int(v) for v in bounds] != stored[:4]:
        return False
    return selection_print(bounds, read_selection()) == stored


def mask_print(width: int, height: int, mask: bytes) -> list:
    """Fingerprint of a layer mask: its size and a hash of its "Y u8" bytes."""
    return [int(width), int(height), hashlib.blake2b(mask, digest_size=16).hexdigest()]


def last_result_changed(state: RoundState | None, intent: Intent, selection_bounds: Sequence[int] | None,
                        mask_size: tuple[int, int] | None, read_mask: Callable[[], bytes]) -> bool:
    """True when the result the last run wrote is no longer in the image (undone, edited by hand, deleted).

    A layer mask is compared by size first (no mask or another size: changed, nothing read), then by hash.
    A selection output is compared by the fingerprint ``build_intent`` already checked
    (``intent.selection_is_matte``). No selection at all does not count as a change: dropping the selection to
    paint outside it is how a user refines (an undone run that started without a selection looks the same and
    keeps the session; Start Over forgets it).
    """
    if state is None:
        return False
    if state.mask is not None:
        if mask_size is None or [int(v) for v in mask_size] != state.mask[:2]:
            return True
        return mask_print(*mask_size, read_mask()) != state.mask
    if state.selection is not None:
        return selection_bounds is not None and not intent.selection_is_matte
    return False


def _click_key(click: Sequence) -> str:
    return f"{float(click[0]):.1f},{float(click[1]):.1f},{int(bool(click[2]))}"


def _scribble_key(scribble: dict) -> str:
    pts = ";".join(f"{x:.1f},{y:.1f}" for x, y in scribble["points"])
    return f"{int(bool(scribble['positive']))}|{scribble['width']}|{pts}"


def _pack_mask(mask: StrokeMask) -> dict:
    return {"x": mask.x, "y": mask.y, "w": mask.width, "h": mask.height,
            "data": base64.b64encode(zlib.compress(mask.data, 6)).decode()}


def _unpack_mask(d: dict) -> tuple[int, int, int, int, bytes]:
    return d["x"], d["y"], d["w"], d["h"], zlib.decompress(base64.b64decode(d["data"]))


def _realign(prev: tuple[int, int, int, int, bytes], x: int, y: int, w: int, h: int) -> bytes:
    """The previous mask re-cut to the frame (x, y, w, h), zeros where it did not reach."""
    px, py, pw, ph, pdata = prev
    out = []
    zero_row = bytes(w)
    for row in range(y, y + h):
        if not py <= row < py + ph:
            out.append(zero_row)
            continue
        lo, hi = max(x, px), min(x + w, px + pw)
        if hi <= lo:
            out.append(zero_row)
            continue
        src = pdata[(row - py) * pw + lo - px:(row - py) * pw + hi - px]
        out.append(bytes(lo - x) + src + bytes(x + w - hi))
    return b"".join(out)


def new_pixels(mask: StrokeMask, previous: dict | None) -> StrokeMask | None:
    """Pixels painted since the previous run (current AND NOT previous), cropped; None if nothing is new."""
    if previous is None:
        return mask
    before = _realign(_unpack_mask(previous), mask.x, mask.y, mask.width, mask.height)
    # Whole-mask bit arithmetic on big integers stays in C; masks hold only 0 and 255.
    now = int.from_bytes(mask.data, "big")
    old = int.from_bytes(before, "big")
    fresh = (now & ~old).to_bytes(len(mask.data), "big")
    cropped = crop_mask(fresh, mask.width, mask.height)
    if cropped is None:
        return None
    x, y, w, h, data = cropped
    return StrokeMask(mask.source_id, mask.positive, mask.x + x, mask.y + y, w, h, data)


def next_round(intent: Intent, state: RoundState | None, session: str) -> tuple[dict, RoundState]:
    """The prompts to send for this run and the state to store after it succeeds.

    A different session (first run, backend restarted, layer pixels changed) gets the whole intent. Otherwise
    only what is new: a changed box or text, clicks and path strokes not sent before, freshly painted pixels.
    When nothing is new the whole intent is sent again as a fresh start (the caller resets the session).
    """
    fresh_state = RoundState(
        session=session, box=intent.box, text=intent.text,
        clicks=[_click_key(c) for c in intent.clicks],
        scribbles=[_scribble_key(s) for s in intent.scribbles],
        strokes={str(m.source_id): _pack_mask(m) for m in intent.stroke_masks},
        # A mask output leaves the selection alone: while it is still the old matte it must stay recognised.
        selection=state.selection if state is not None and intent.selection_is_matte else None,
    )
    if state is None or state.session != session:
        return intent.to_prompts(), fresh_state
    sent_clicks, sent_scribbles = set(state.clicks), set(state.scribbles)
    masks = []
    for mask in intent.stroke_masks:
        diff = new_pixels(mask, state.strokes.get(str(mask.source_id)))
        if diff is not None:
            masks.append(diff.to_prompt())
    prompts = {
        "box": intent.box if intent.box != state.box else None,
        "clicks": [c for c in intent.clicks if _click_key(c) not in sent_clicks],
        "scribbles": [s for s in intent.scribbles if _scribble_key(s) not in sent_scribbles],
        "text": intent.text if intent.text != state.text else None,
        "stroke_masks": masks,
    }
    # The session keeps its last box and text when the user drops the selection (e.g. to paint outside it, as
    # GIMP paints only inside a selection), so they are not new when they come back.
    fresh_state.box = intent.box if intent.box is not None else state.box
    fresh_state.text = intent.text if intent.text is not None else state.text
    # Strokes erased since the last run stay in the backend history; keep the union so they are not resent.
    for key, packed in state.strokes.items():
        fresh_state.strokes.setdefault(key, packed)
    fresh_state.clicks = sorted(sent_clicks | set(fresh_state.clicks))
    fresh_state.scribbles = sorted(sent_scribbles | set(fresh_state.scribbles))
    return prompts, fresh_state


def round_is_empty(prompts: dict) -> bool:
    return not any(prompts.get(k) for k in ("box", "clicks", "scribbles", "text", "stroke_masks"))


def plan_round(intent: Intent, state: RoundState | None, session: str,
               result_changed: bool = False) -> tuple[dict, RoundState, bool]:
    """``next_round`` plus the decision to start the session over: (prompts, state to store, reset first).

    The session starts over from the whole intent when nothing is new (a plain re-run) or when the last run's
    result is gone (``last_result_changed``): its prompts and its prediction must not steer this run. The
    stored state is then exactly the intent sent, so nothing of the dropped rounds is taken as already sent.
    """
    prompts, new_state = next_round(intent, state, session)
    if state is None or state.session != session or not (result_changed or round_is_empty(prompts)):
        return prompts, new_state, False
    _, restart = next_round(intent, None, session)
    restart.selection = new_state.selection  # a matte selection still in place stays recognised
    return intent.to_prompts(), restart, True


# --- which layer a run is for ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerInfo:
    """One layer of the image as the target rules see it; a list of these is the stack, top first, groups
    followed by their children."""

    item_id: int
    name: str
    visible: bool = True
    group: bool = False
    has_session: bool = False  # carries this plug-in's round state (a DFIMat round ran on it)

    @property
    def is_stroke(self) -> bool:
        return stroke_layer_polarity(self.name) is not None


NO_PHOTO_LAYER = (
    "DFIMat cannot tell which layer is the photo to matte: {why}. Select the photo layer in the Layers dialog "
    "and run again (\"DFIMat +/-\" stroke layers and channels are never matted)."
)


def pick_target(layers: Sequence[LayerInfo], selected: Sequence[int | None], last_target: int | None = None) -> int:
    """The id of the layer a run mattes.

    ``selected`` holds the ids of the selected drawables, a selected layer mask already replaced by its layer's
    id and a channel given as None. A selected ordinary layer is the target. When only stroke layers or channels
    are selected (the user just painted, or looks at a channel), the run continues the photo layer's session:
    the layer the last run masked (``last_target``), else the one layer that has a DFIMat session, else the
    nearest visible ordinary layer under the active stroke layer (under the top stroke layer for a channel),
    else the only visible ordinary layer. Raises :class:`IntentError` naming what is ambiguous otherwise.
    """
    by_id = {layer.item_id: layer for layer in layers}
    chosen = [by_id[i] for i in selected if i is not None and i in by_id]
    for layer in chosen:
        if not layer.is_stroke:
            return layer.item_id
    photos = [layer for layer in layers if not layer.is_stroke and not layer.group]
    if last_target is not None and any(layer.item_id == last_target for layer in photos):
        return last_target
    with_session = [layer for layer in photos if layer.has_session]
    if len(with_session) == 1:
        return with_session[0].item_id
    strokes = [layer for layer in chosen if layer.is_stroke] or [layer for layer in layers if layer.is_stroke]
    if strokes:
        start = layers.index(strokes[0]) + 1
        for layer in layers[start:]:
            if layer.visible and not layer.is_stroke and not layer.group:
                return layer.item_id
    visible = [layer for layer in photos if layer.visible]
    if len(visible) == 1:
        return visible[0].item_id
    if chosen:
        what = f"the stroke layer \"{strokes[0].name}\" is selected"
    else:
        what = "a channel is selected" if None in selected else "no layer is selected"
    if not visible:
        why = f"{what} and the image has no visible ordinary layer"
    elif strokes:
        names = ", ".join(f"\"{layer.name}\"" for layer in visible[:4])
        why = f"{what}, no DFIMat run was made on this image yet and no visible layer lies under the strokes " \
              f"(candidates: {names})"
    else:
        names = ", ".join(f"\"{layer.name}\"" for layer in visible[:4])
        why = f"{what}, no DFIMat run was made on this image yet and it has {len(visible)} visible layers ({names})"
    raise IntentError(NO_PHOTO_LAYER.format(why=why))


# --- what a round did, for the user ----------------------------------------------------------------------------

SELECT_TITLE = "DFIMat Select Person"
REFINE_TITLE = "DFIMat Refine"


def round_title(state: RoundState | None, session: str, restart: bool) -> str:
    """"DFIMat Refine" when the run adds to a session's earlier rounds, else "DFIMat Select Person"."""
    if state is not None and state.session == session and not restart:
        return REFINE_TITLE
    return SELECT_TITLE


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def describe_prompts(prompts: dict) -> str:
    """What a round sent, briefly: "box, 2 strokes" (never empty)."""
    parts = []
    if prompts.get("box"):
        parts.append("box")
    if prompts.get("clicks"):
        parts.append(_count(len(prompts["clicks"]), "click"))
    if prompts.get("scribbles"):
        parts.append(_count(len(prompts["scribbles"]), "path stroke"))
    if prompts.get("stroke_masks"):
        parts.append(_count(len(prompts["stroke_masks"]), "painted stroke"))
    if prompts.get("text"):
        parts.append("text")
    return ", ".join(parts) or "nothing new"


def round_report(title: str, change: str, seconds: float, prompts: dict | None = None) -> str:
    """The one-line status after a round: which round, what changed, how long it took (and from what).

    GIMP shows a one-line message that fits in the image window's status bar there and a longer one in a message
    box, so the GIMP plug-in leaves the prompts out.
    """
    text = f"{title}: {change} in {seconds:.1f} s"
    return text if prompts is None else f"{text} ({describe_prompts(prompts)})"


# --- the matte view ----------------------------------------------------------------------------------------------

VIEW_MODES = {"solid": "On a solid colour", "overlay": "Coloured overlay"}
OVERLAY_OPACITY = 50.0
_INVERT = bytes(255 - v for v in range(256))


def view_plan(mode: str, matte: bytes) -> tuple[str, bytes]:
    """How the view image shows a matte: which of its two layers carries a mask, and that mask's bytes.

    "solid": the photo, masked by the matte, over a layer of the colour, so every leak shows against it;
    "overlay": the colour at half opacity over the photo wherever the matte is not (the inverted matte).
    """
    if mode == "solid":
        return "photo", matte
    if mode == "overlay":
        return "colour", matte.translate(_INVERT)
    raise ValueError(f"unknown view mode {mode!r}; choose one of {', '.join(VIEW_MODES)}")


def srgb_byte(linear: float) -> int:
    """A linear-light channel value in [0, 1] as an 8-bit sRGB value (GEGL colours are linear)."""
    v = min(max(float(linear), 0.0), 1.0)
    encoded = 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055
    return int(round(encoded * 255))
