"""Turn what the user made with Krita's own tools into DFIMat prompts. Pure Python: no Krita, no Qt.

``document.py`` reads the document into a :class:`Scene` of plain values; this module decides what each thing
means (selection bounds -> box, "DFIMat +"/"DFIMat -" paint layers -> stroke masks, shapes on "DFIMat" vector
layers -> clicks or scribbles, docker text or a descriptive layer name -> text) and which parts are new since
the previous round of the same session.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field

from .pixels import crop_plane

# "DFIMat +", "dfimat -", "DFIMat − hair" (U+2212 is what a typographic minus looks like in layer names);
# a bare "DFIMat" layer counts as positive. "DFIMat" followed by words but no sign is not a prompt layer: the
# plug-in's own "Split people" output is named "DFIMat person 1", and a cut-out person must not become a stroke.
_PROMPT_LAYER = re.compile(r"^\s*dfimat\s*(?:([+\-\u2212])|$)", re.IGNORECASE)
# Names Krita gives layers by itself: they describe nothing, so they are never used as a text prompt.
_DEFAULT_NAME = re.compile(
    r"^\s*(background|(paint|vector|group|fill|file|clone|filter)?\s*layer(\s*\d+)?|copy of .*|.*\.(png|jpe?g|kra|tiff?|webp))\s*$",
    re.IGNORECASE,
)
DEFAULT_SCRIBBLE_WIDTH = 5.0


class NoPromptError(ValueError):
    """The document holds nothing that can be used as a prompt."""


@dataclass(frozen=True)
class StrokeLayer:
    """A paint layer's alpha inside the canvas: ``alpha`` has ``width * height`` bytes at (x, y)."""

    name: str
    x: int
    y: int
    width: int
    height: int
    alpha: bytes


@dataclass(frozen=True)
class VectorShape:
    """A shape on a vector layer; ``bbox`` is (x, y, w, h) in image pixels, ``svg`` its own SVG fragment."""

    layer_name: str
    shape_name: str
    bbox: tuple[float, float, float, float]
    svg: str = ""


@dataclass(frozen=True)
class Scene:
    """Everything prompt-related that was read from the document, as plain values."""

    width: int
    height: int
    selection: tuple[int, int, int, int] | None = None  # x, y, w, h
    stroke_layers: tuple[StrokeLayer, ...] = ()
    shapes: tuple[VectorShape, ...] = ()
    active_layer_name: str = ""
    text: str = ""


@dataclass
class StrokeMask:
    positive: bool
    x: int
    y: int
    width: int
    height: int
    mask: bytes

    def fingerprint(self) -> tuple:
        return ("stroke", self.positive, self.x, self.y, self.width, self.height, zlib.crc32(self.mask))

    def to_wire(self) -> dict:
        return {"positive": self.positive, "x": self.x, "y": self.y, "width": self.width,
                "height": self.height, "mask": self.mask}


@dataclass
class Prompts:
    """One round of prompts in the engine's schema plus painted stroke masks."""

    box: list[int] | None = None
    clicks: list[list] = field(default_factory=list)
    scribbles: list[dict] = field(default_factory=list)
    text: str | None = None
    stroke_masks: list[StrokeMask] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.box or self.clicks or self.scribbles or self.text or self.stroke_masks)

    def to_wire(self) -> dict:
        """The dict handed to ``dfimat_client.Client.predict``."""
        return {"box": self.box, "clicks": self.clicks, "scribbles": self.scribbles, "text": self.text,
                "stroke_masks": [s.to_wire() for s in self.stroke_masks]}

    def summary(self) -> str:
        parts = []
        if self.box:
            parts.append("box")
        if self.clicks:
            parts.append(f"{len(self.clicks)} click(s)")
        if self.scribbles:
            parts.append(f"{len(self.scribbles)} scribble(s)")
        if self.stroke_masks:
            pos = sum(s.positive for s in self.stroke_masks)
            parts.append(f"{pos} + / {len(self.stroke_masks) - pos} - stroke layer(s)")
        if self.text:
            parts.append(f'text "{self.text}"')
        return ", ".join(parts) or "no prompts"


def prompt_layer_sign(name: str) -> bool | None:
    """True for "DFIMat +" (or bare "DFIMat"), False for "DFIMat -", None for any other layer name."""
    found = _PROMPT_LAYER.match(name or "")
    if found is None:
        return None
    return found.group(1) not in ("-", "\u2212")


def text_from(docker_text: str, layer_name: str) -> str | None:
    """The docker's text, else the layer's name when it is a descriptive phrase (not one word, not a default)."""
    text = (docker_text or "").strip()
    if text:
        return text
    name = (layer_name or "").strip()
    # A one-word name ("photo", "IMG_2034") names a file, not a person; a phrase ("woman in red") describes one.
    if len(name.split()) < 2 or _DEFAULT_NAME.match(name) or prompt_layer_sign(name) is not None:
        return None
    return name


def box_from_selection(selection: tuple[int, int, int, int] | None, width: int, height: int) -> list[int] | None:
    """Selection (x, y, w, h) clipped to the canvas -> box [x0, y0, x1, y1] (x1/y1 exclusive)."""
    if selection is None:
        return None
    x, y, w, h = selection
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return [x0, y0, x1, y1]


def stroke_mask_from(layer: StrokeLayer) -> StrokeMask | None:
    """The layer's painted pixels cropped to their bounds, or None if nothing is painted."""
    sign = prompt_layer_sign(layer.name)
    if sign is None:
        return None
    found = crop_plane(layer.alpha, layer.width, layer.height)
    if found is None:
        return None
    x, y, w, h, cropped = found
    return StrokeMask(sign, layer.x + x, layer.y + y, w, h, cropped)


def click_size_limit(width: int, height: int) -> float:
    """Shapes no larger than this (pixels, longest side) are clicks; larger ones are scribbles."""
    return max(12.0, 0.02 * max(width, height))


def shape_prompts(shape: VectorShape, width: int, height: int) -> tuple[list, list]:
    """(clicks, scribbles) for one shape on a "DFIMat" vector layer."""
    sign = prompt_layer_sign(shape.shape_name)
    if sign is None:
        sign = prompt_layer_sign(shape.layer_name)
    if sign is None:
        return [], []
    bx, by, bw, bh = shape.bbox
    if bw < 0 or bh < 0 or not all(math.isfinite(v) for v in shape.bbox):
        return [], []
    if max(bw, bh) <= click_size_limit(width, height):
        cx, cy = _clamp(bx + bw / 2, by + bh / 2, width, height)
        return [[cx, cy, sign]], []
    lines = svg_polylines(shape.svg) if shape.svg else []
    if not lines:
        # Unknown SVG: its outline box still says where the user drew.
        lines = [[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]]
    placed = _fit_into(lines, shape.bbox)
    scribbles = []
    for line in placed:
        points = [list(_clamp(x, y, width, height)) for x, y in line]
        if len(points) >= 2:
            scribbles.append({"points": points, "positive": sign, "width": DEFAULT_SCRIBBLE_WIDTH})
    return [], scribbles


def build_prompts(scene: Scene) -> Prompts:
    """All prompts the scene holds. Raises NoPromptError when there are none."""
    prompts = Prompts(box=box_from_selection(scene.selection, scene.width, scene.height),
                      text=text_from(scene.text, scene.active_layer_name))
    for layer in scene.stroke_layers:
        stroke = stroke_mask_from(layer)
        if stroke is not None:
            prompts.stroke_masks.append(stroke)
    for shape in scene.shapes:
        clicks, scribbles = shape_prompts(shape, scene.width, scene.height)
        prompts.clicks.extend(clicks)
        prompts.scribbles.extend(scribbles)
    if prompts.is_empty():
        raise NoPromptError(
            "Nothing to select from: make a selection around the person, paint on a layer named "
            "'DFIMat +' (or 'DFIMat -' for what to leave out), or type who to select in the DFIMat docker."
        )
    return prompts


class PromptMemory:
    """What was already sent in earlier rounds of each session, so a re-run sends only what is new.

    Clicks, scribbles and strokes accumulate in the backend's prompt history; box and text are "latest wins",
    so they are sent every round.
    """

    def __init__(self) -> None:
        self._sent: dict[str, set] = {}

    def forget(self, key: str) -> None:
        self._sent.pop(key, None)

    def new_round(self, key: str, prompts: Prompts) -> Prompts:
        """The part of ``prompts`` not sent before for ``key`` (call :meth:`remember` once it was sent)."""
        sent = self._sent.get(key, set())
        return Prompts(
            box=prompts.box,
            text=prompts.text,
            clicks=[c for c in prompts.clicks if ("click", *c) not in sent],
            scribbles=[s for s in prompts.scribbles if _scribble_key(s) not in sent],
            stroke_masks=[s for s in prompts.stroke_masks if s.fingerprint() not in sent],
        )

    def remember(self, key: str, prompts: Prompts) -> None:
        sent = self._sent.setdefault(key, set())
        sent.update(("click", *c) for c in prompts.clicks)
        sent.update(_scribble_key(s) for s in prompts.scribbles)
        sent.update(s.fingerprint() for s in prompts.stroke_masks)


def _scribble_key(scribble: dict) -> tuple:
    return ("scribble", scribble["positive"], scribble["width"],
            tuple(tuple(round(v, 2) for v in p) for p in scribble["points"]))


def _clamp(x: float, y: float, width: int, height: int) -> tuple[float, float]:
    return (round(min(max(x, 0.0), width - 1.0), 2), round(min(max(y, 0.0), height - 1.0), 2))


def _fit_into(lines: list[list[tuple[float, float]]], bbox: tuple[float, float, float, float]):
    """Map polylines from their own SVG units onto the shape's known pixel bounding box.

    Krita's per-shape SVG may carry transforms and point units; the bounding box it reports is reliable, so the
    geometry is placed by matching its extent to that box instead of interpreting units.
    """
    xs = [x for line in lines for x, _ in line]
    ys = [y for line in lines for _, y in line]
    minx, maxx, miny, maxy = min(xs), max(xs), min(ys), max(ys)
    bx, by, bw, bh = bbox
    sx = bw / (maxx - minx) if maxx - minx > 1e-9 else 0.0
    sy = bh / (maxy - miny) if maxy - miny > 1e-9 else 0.0
    ox = bx if sx else bx + bw / 2
    oy = by if sy else by + bh / 2
    return [[(ox + (x - minx) * sx, oy + (y - miny) * sy) for x, y in line] for line in lines]


# --- SVG geometry -> polylines (paths, lines, polylines, rects, circles, ellipses) ---------------------------

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PATH_TOKEN = re.compile(r"[MmLlHhVvCcSsQqTtAaZz]|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ARGS = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "A": 7, "Z": 0}
_CURVE_STEPS = 12
Matrix = tuple[float, float, float, float, float, float]
_IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def svg_polylines(svg: str) -> list[list[tuple[float, float]]]:
    """Flatten the drawable elements of an SVG fragment into polylines (after their transforms)."""
    try:
        root = ET.fromstring(f"<root>{svg}</root>" if not svg.lstrip().startswith("<svg") else svg)
    except ET.ParseError:
        return []
    lines: list[list[tuple[float, float]]] = []
    _walk(root, _IDENTITY, lines)
    return [line for line in lines if len(line) >= 2]


def _walk(elem: ET.Element, matrix: Matrix, out: list) -> None:
    matrix = _multiply(matrix, parse_transform(elem.get("transform", "")))
    tag = elem.tag.rsplit("}", 1)[-1]
    local = _element_lines(tag, elem)
    out.extend([_apply(matrix, x, y) for x, y in line] for line in local)
    for child in elem:
        _walk(child, matrix, out)


def _num(elem: ET.Element, name: str) -> float:
    found = _NUMBER.match(elem.get(name, "0").strip())
    return float(found.group()) if found else 0.0


def _element_lines(tag: str, elem: ET.Element) -> list[list[tuple[float, float]]]:
    if tag == "path":
        return path_polylines(elem.get("d", ""))
    if tag == "line":
        return [[(_num(elem, "x1"), _num(elem, "y1")), (_num(elem, "x2"), _num(elem, "y2"))]]
    if tag in ("polyline", "polygon"):
        values = [float(v) for v in _NUMBER.findall(elem.get("points", ""))]
        points = list(zip(values[0::2], values[1::2], strict=False))
        if tag == "polygon" and points:
            points.append(points[0])
        return [points]
    if tag == "rect":
        x, y, w, h = (_num(elem, k) for k in ("x", "y", "width", "height"))
        return [[(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)]]
    if tag in ("circle", "ellipse"):
        cx, cy = _num(elem, "cx"), _num(elem, "cy")
        rx = _num(elem, "r") if tag == "circle" else _num(elem, "rx")
        ry = _num(elem, "r") if tag == "circle" else _num(elem, "ry")
        steps = 4 * _CURVE_STEPS
        return [[(cx + rx * math.cos(2 * math.pi * i / steps), cy + ry * math.sin(2 * math.pi * i / steps))
                 for i in range(steps + 1)]]
    return []


def parse_transform(text: str) -> Matrix:
    """An SVG ``transform`` attribute (matrix, translate, scale, rotate) as one affine matrix."""
    result = _IDENTITY
    for name, args in re.findall(r"(matrix|translate|scale|rotate)\s*\(([^)]*)\)", text or ""):
        v = [float(a) for a in _NUMBER.findall(args)]
        if name == "matrix" and len(v) == 6:
            m = tuple(v)
        elif name == "translate" and v:
            m = (1.0, 0.0, 0.0, 1.0, v[0], v[1] if len(v) > 1 else 0.0)
        elif name == "scale" and v:
            m = (v[0], 0.0, 0.0, v[1] if len(v) > 1 else v[0], 0.0, 0.0)
        elif name == "rotate" and v:
            a = math.radians(v[0])
            c, s = math.cos(a), math.sin(a)
            m = (c, s, -s, c, 0.0, 0.0)
            if len(v) == 3:
                m = _multiply(_multiply((1.0, 0.0, 0.0, 1.0, v[1], v[2]), m), (1.0, 0.0, 0.0, 1.0, -v[1], -v[2]))
        else:
            continue
        result = _multiply(result, m)
    return result


def _multiply(a: Matrix, b: Matrix) -> Matrix:
    return (a[0] * b[0] + a[2] * b[1], a[1] * b[0] + a[3] * b[1],
            a[0] * b[2] + a[2] * b[3], a[1] * b[2] + a[3] * b[3],
            a[0] * b[4] + a[2] * b[5] + a[4], a[1] * b[4] + a[3] * b[5] + a[5])


def _apply(m: Matrix, x: float, y: float) -> tuple[float, float]:
    return (m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5])


def path_polylines(d: str) -> list[list[tuple[float, float]]]:
    """Flatten SVG path data into polylines; Bézier curves are sampled, arcs become straight segments."""
    tokens = _PATH_TOKEN.findall(d or "")
    lines: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    x = y = start_x = start_y = 0.0
    last_ctrl: tuple[float, float] | None = None
    cmd = ""
    i = 0
    while i < len(tokens):
        if tokens[i].isalpha():
            cmd = tokens[i]
            i += 1
            if cmd in "Zz":
                if current:
                    current.append((start_x, start_y))
                x, y = start_x, start_y
                last_ctrl = None
                continue
        if not cmd or cmd in "Zz":
            return lines + ([current] if len(current) >= 2 else [])
        n = _ARGS[cmd.upper()]
        if i + n > len(tokens) or any(t.isalpha() for t in tokens[i:i + n]):
            break
        a = [float(t) for t in tokens[i:i + n]]
        i += n
        rel = cmd.islower()
        up = cmd.upper()
        ox, oy = (x, y) if rel else (0.0, 0.0)
        if up == "M":
            if len(current) >= 2:
                lines.append(current)
            x, y = ox + a[0], oy + a[1]
            start_x, start_y = x, y
            current = [(x, y)]
            cmd = "l" if rel else "L"  # further pairs after a moveto are linetos
            last_ctrl = None
            continue
        if not current:
            current = [(x, y)]
        if up == "L" or up == "T" or up == "A":
            nx, ny = (ox + a[-2], oy + a[-1])
            current.append((nx, ny))
            last_ctrl = None
        elif up == "H":
            nx, ny = (ox + a[0], y)
            current.append((nx, ny))
        elif up == "V":
            nx, ny = (x, oy + a[0])
            current.append((nx, ny))
        elif up in ("C", "S"):
            if up == "C":
                c1 = (ox + a[0], oy + a[1])
                c2, end = (ox + a[2], oy + a[3]), (ox + a[4], oy + a[5])
            else:
                c1 = (2 * x - last_ctrl[0], 2 * y - last_ctrl[1]) if last_ctrl else (x, y)
                c2, end = (ox + a[0], oy + a[1]), (ox + a[2], oy + a[3])
            current.extend(_cubic((x, y), c1, c2, end))
            nx, ny = end
            last_ctrl = c2
        else:  # Q
            c = (ox + a[0], oy + a[1])
            end = (ox + a[2], oy + a[3])
            current.extend(_cubic((x, y), _lerp((x, y), c, 2 / 3), _lerp(end, c, 2 / 3), end))
            nx, ny = end
            last_ctrl = None
        x, y = nx, ny
    if len(current) >= 2:
        lines.append(current)
    return lines


def _lerp(p: tuple[float, float], q: tuple[float, float], t: float) -> tuple[float, float]:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t)


def _cubic(p0, p1, p2, p3) -> list[tuple[float, float]]:
    out = []
    for k in range(1, _CURVE_STEPS + 1):
        t = k / _CURVE_STEPS
        u = 1 - t
        out.append((u ** 3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t ** 3 * p3[0],
                    u ** 3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t ** 3 * p3[1]))
    return out
