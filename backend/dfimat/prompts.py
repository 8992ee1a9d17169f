"""Typed, validated user prompts: clicks, scribbles, a box and text, in image pixel coordinates.

One round of interaction is a :class:`RoundPrompts`; a session's rounds accumulate in a :class:`PromptHistory`.
The engine's wire format (``RoundPrompts.from_dict`` / ``to_dict``) is fixed by ``docs/CONTRACTS.md``::

    {"box": [x0, y0, x1, y1] | None, "clicks": [[x, y, positive], ...],
     "scribbles": [{"points": [[x, y], ...], "positive": bool, "width": px}, ...], "text": str | None}

Coordinates are continuous image pixels: pixel (row r, column c) covers ``[c, c + 1) x [r, r + 1)``, so every
valid coordinate satisfies ``0 <= x <= W`` and ``0 <= y <= H``. This module is pure Python so that the plugins'
clients and the tests can use it without numpy or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

__all__ = ["PromptError", "Click", "Scribble", "Box", "RoundPrompts", "PromptHistory"]

_ROUND_KEYS = frozenset({"box", "clicks", "scribbles", "text"})
_SCRIBBLE_KEYS = frozenset({"points", "positive", "width"})
MAX_TEXT_CHARS = 500


class PromptError(ValueError):
    """A prompt is malformed: wrong type, non-finite number, outside the image, degenerate or empty."""


def _number(value: Any, what: str) -> float:
    # bool is an int subclass; a stray True where a coordinate belongs is almost surely a caller bug.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise PromptError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise PromptError(f"{what} must be finite, got {number}")
    return number


def _flag(value: Any, what: str) -> bool:
    # JSON clients sometimes send 0/1 for booleans; accept exactly those, nothing fuzzier.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if getattr(getattr(value, "dtype", None), "kind", None) == "b":  # numpy bool scalar
        return bool(value)
    raise PromptError(f"{what} must be true or false, got {value!r}")


def _check_inside(x: float, y: float, width: float, height: float, what: str) -> None:
    if not (0.0 <= x <= width and 0.0 <= y <= height):
        raise PromptError(
            f"{what} ({x:g}, {y:g}) is outside the {width:g}x{height:g} image "
            f"(need 0 <= x <= {width:g} and 0 <= y <= {height:g})"
        )


def _image_size(width: Any, height: Any) -> tuple[float, float]:
    w = _number(width, "image width")
    h = _number(height, "image height")
    if w <= 0 or h <= 0:
        raise PromptError(f"image size must be positive, got {w:g}x{h:g}")
    return w, h


@dataclass(frozen=True)
class Click:
    """One click at (x, y); ``positive`` marks the target (True) or not-the-target (False)."""

    x: float
    y: float
    positive: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "x", _number(self.x, "click x"))
        object.__setattr__(self, "y", _number(self.y, "click y"))
        object.__setattr__(self, "positive", _flag(self.positive, "click positive"))

    def check_inside(self, width: float, height: float) -> None:
        """Raise :class:`PromptError` unless the click lies within a ``width`` x ``height`` image."""
        _check_inside(self.x, self.y, width, height, "click")

    def scaled(self, sx: float, sy: float) -> Click:
        return Click(self.x * sx, self.y * sy, self.positive)


@dataclass(frozen=True)
class Scribble:
    """A brush stroke: a polyline of one or more points drawn with a round brush ``width`` pixels wide."""

    points: tuple[tuple[float, float], ...]
    positive: bool = True
    width: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.points, (str, bytes)) or not hasattr(self.points, "__iter__"):
            raise PromptError(f"scribble points must be a list of [x, y] pairs, got {self.points!r}")
        points = []
        for i, point in enumerate(self.points):
            if isinstance(point, (str, bytes)) or not hasattr(point, "__len__") or len(point) != 2:
                raise PromptError(f"scribble point {i} must be an [x, y] pair, got {point!r}")
            points.append((_number(point[0], f"scribble point {i} x"), _number(point[1], f"scribble point {i} y")))
        if not points:
            raise PromptError("a scribble needs at least one point")
        object.__setattr__(self, "points", tuple(points))
        object.__setattr__(self, "positive", _flag(self.positive, "scribble positive"))
        width = _number(self.width, "scribble width")
        if width <= 0:
            raise PromptError(f"scribble width must be positive, got {width:g}")
        object.__setattr__(self, "width", width)

    def check_inside(self, width: float, height: float) -> None:
        for x, y in self.points:
            _check_inside(x, y, width, height, "scribble point")

    def scaled(self, sx: float, sy: float) -> Scribble:
        # The brush is round, so its width follows the geometric mean of the two scale factors.
        return Scribble(
            tuple((x * sx, y * sy) for x, y in self.points), self.positive, self.width * math.sqrt(sx * sy)
        )


@dataclass(frozen=True)
class Box:
    """An axis-aligned box around the target, ``x0 < x1`` and ``y0 < y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1"):
            object.__setattr__(self, name, _number(getattr(self, name), f"box {name}"))
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise PromptError(
                f"box [{self.x0:g}, {self.y0:g}, {self.x1:g}, {self.y1:g}] is degenerate: "
                "need x0 < x1 and y0 < y1"
            )

    def check_inside(self, width: float, height: float) -> None:
        _check_inside(self.x0, self.y0, width, height, "box corner")
        _check_inside(self.x1, self.y1, width, height, "box corner")

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)

    def grown(self, left: float, top: float, right: float, bottom: float,
              width: float | None = None, height: float | None = None) -> Box:
        """Each side moved out by that fraction of the box's width (left, right) or height (top, bottom); kept inside
        a ``width`` x ``height`` image when both are given."""
        bw, bh = self.x1 - self.x0, self.y1 - self.y0
        x0, y0, x1, y1 = self.x0 - left * bw, self.y0 - top * bh, self.x1 + right * bw, self.y1 + bottom * bh
        if width is not None and height is not None:
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
        return Box(x0, y0, x1, y1)

    def as_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


def _check_text(text: Any) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise PromptError(f"text must be a string or null, got {type(text).__name__}")
    stripped = " ".join(text.split())
    if not stripped:
        raise PromptError("text is empty; send null for no text")
    if len(stripped) > MAX_TEXT_CHARS:
        raise PromptError(f"text is {len(stripped)} characters long; the limit is {MAX_TEXT_CHARS}")
    return stripped


@dataclass(frozen=True)
class RoundPrompts:
    """Everything the user added in one round; any combination of prompt types is allowed."""

    clicks: tuple[Click, ...] = ()
    scribbles: tuple[Scribble, ...] = ()
    box: Box | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        clicks = tuple(self.clicks)
        scribbles = tuple(self.scribbles)
        for click in clicks:
            if not isinstance(click, Click):
                raise PromptError(f"clicks must hold Click objects, got {type(click).__name__}")
        for scribble in scribbles:
            if not isinstance(scribble, Scribble):
                raise PromptError(f"scribbles must hold Scribble objects, got {type(scribble).__name__}")
        if self.box is not None and not isinstance(self.box, Box):
            raise PromptError(f"box must be a Box or None, got {type(self.box).__name__}")
        object.__setattr__(self, "clicks", clicks)
        object.__setattr__(self, "scribbles", scribbles)
        object.__setattr__(self, "text", _check_text(self.text))

    def is_empty(self) -> bool:
        return not self.clicks and not self.scribbles and self.box is None and self.text is None

    def check_inside(self, width: float, height: float) -> None:
        """Raise :class:`PromptError` if any coordinate lies outside a ``width`` x ``height`` image."""
        width, height = _image_size(width, height)
        for click in self.clicks:
            click.check_inside(width, height)
        for scribble in self.scribbles:
            scribble.check_inside(width, height)
        if self.box is not None:
            self.box.check_inside(width, height)

    def scaled(self, sx: float, sy: float) -> RoundPrompts:
        """The same prompts for an image resized by ``sx`` horizontally and ``sy`` vertically."""
        sx = _number(sx, "scale x")
        sy = _number(sy, "scale y")
        if sx <= 0 or sy <= 0:
            raise PromptError(f"scale factors must be positive, got {sx:g}, {sy:g}")
        return RoundPrompts(
            clicks=tuple(c.scaled(sx, sy) for c in self.clicks),
            scribbles=tuple(s.scaled(sx, sy) for s in self.scribbles),
            box=None if self.box is None else self.box.scaled(sx, sy),
            text=self.text,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": None if self.box is None else self.box.as_list(),
            "clicks": [[c.x, c.y, c.positive] for c in self.clicks],
            "scribbles": [
                {"points": [[x, y] for x, y in s.points], "positive": s.positive, "width": s.width}
                for s in self.scribbles
            ],
            "text": self.text,
        }

    @classmethod
    def from_dict(cls, d: Any, width: float, height: float, allow_empty: bool = False) -> RoundPrompts:
        """Parse and validate the engine's prompt dict for a ``width`` x ``height`` image.

        Missing keys mean "none of that kind"; unknown keys, malformed values, coordinates outside the image and
        (unless ``allow_empty``) a round with no prompt at all raise :class:`PromptError`.
        """
        width, height = _image_size(width, height)
        if not isinstance(d, dict):
            raise PromptError(f"prompts must be a dict, got {type(d).__name__}")
        unknown = set(d) - _ROUND_KEYS
        if unknown:
            raise PromptError(f"unknown prompt keys {sorted(map(str, unknown))}; allowed: {sorted(_ROUND_KEYS)}")

        box = d.get("box")
        if box is not None:
            if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
                raise PromptError(f"box must be [x0, y0, x1, y1] or null, got {box!r}")
            box = Box(*box)

        clicks_raw = d.get("clicks") or []
        if not isinstance(clicks_raw, (list, tuple)):
            raise PromptError(f"clicks must be a list of [x, y, positive], got {type(clicks_raw).__name__}")
        clicks = []
        for i, raw in enumerate(clicks_raw):
            if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__") or len(raw) != 3:
                raise PromptError(f"click {i} must be [x, y, positive], got {raw!r}")
            clicks.append(Click(*raw))

        scribbles_raw = d.get("scribbles") or []
        if not isinstance(scribbles_raw, (list, tuple)):
            raise PromptError(f"scribbles must be a list of objects, got {type(scribbles_raw).__name__}")
        scribbles = []
        for i, raw in enumerate(scribbles_raw):
            if not isinstance(raw, dict):
                raise PromptError(f"scribble {i} must be an object with points/positive/width, got {raw!r}")
            extra = set(raw) - _SCRIBBLE_KEYS
            if extra:
                raise PromptError(f"scribble {i} has unknown keys {sorted(map(str, extra))}")
            if "points" not in raw:
                raise PromptError(f"scribble {i} has no points")
            scribbles.append(Scribble(raw["points"], raw.get("positive", True), raw.get("width", 5.0)))

        prompts = cls(clicks=tuple(clicks), scribbles=tuple(scribbles), box=box, text=d.get("text"))
        prompts.check_inside(width, height)
        if prompts.is_empty() and not allow_empty:
            raise PromptError("empty round: give at least one click, scribble, box or text")
        return prompts


@dataclass
class PromptHistory:
    """All rounds of one session, oldest first; the views merge them the way a model sees them."""

    rounds: list[RoundPrompts] = field(default_factory=list)

    def add(self, prompts: RoundPrompts) -> None:
        if not isinstance(prompts, RoundPrompts):
            raise PromptError(f"a history holds RoundPrompts, got {type(prompts).__name__}")
        self.rounds.append(prompts)

    def clear(self) -> None:
        self.rounds.clear()

    def __len__(self) -> int:
        return len(self.rounds)

    @property
    def clicks(self) -> tuple[Click, ...]:
        return tuple(c for r in self.rounds for c in r.clicks)

    @property
    def scribbles(self) -> tuple[Scribble, ...]:
        return tuple(s for r in self.rounds for s in r.scribbles)

    @property
    def box(self) -> Box | None:
        """The latest box given; a later box replaces an earlier one."""
        for r in reversed(self.rounds):
            if r.box is not None:
                return r.box
        return None

    @property
    def text(self) -> str | None:
        """The latest text given."""
        for r in reversed(self.rounds):
            if r.text is not None:
                return r.text
        return None

    def merged(self) -> RoundPrompts:
        """Rounds 1..t as one round: what a method without multi-round memory is fed at round t (paper Sec. 5.2)."""
        return RoundPrompts(clicks=self.clicks, scribbles=self.scribbles, box=self.box, text=self.text)
