"""The DFIMat wire format: the one place where frames, versions, limits and error codes are defined.

A message is a ZeroMQ multipart message: one UTF-8 JSON header frame followed by zero or more raw binary
frames ("buffers": pixels, masks). Pure Python (stdlib only) so both editor plugins can vendor it.
See docs/protocol.md for the full description.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# Limits shared by client and server. The server may be started with a lower pixel limit and reports the
# limits it enforces in ``hello``; the client checks these defaults before sending anything big.
MAX_PIXELS = 100_000_000  # 100 MP per image
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_BUFFERS = 512
MAX_STROKE_MASKS = 64
MAX_BATCH_ITEMS = 256
MAX_KEY_LENGTH = 256

CHANNELS = (1, 3, 4)

# Message kinds sent by the server.
KIND_REPLY = "reply"
KIND_ERROR = "error"
KIND_PROGRESS = "progress"

# Error codes: machine-readable, stable across versions of the same protocol.
E_BAD_REQUEST = "bad_request"  # malformed frames, JSON or argument types
E_PROTOCOL_VERSION = "protocol_version"
E_AUTH = "auth"
E_UNKNOWN_METHOD = "unknown_method"
E_UNKNOWN_SESSION = "unknown_session"
E_SESSION_EVICTED = "session_evicted"
E_UNKNOWN_IMAGE = "unknown_image"  # open_image by hash only, and the server does not have it
E_TOO_LARGE = "too_large"
E_BAD_IMAGE = "bad_image"
E_BAD_PROMPT = "bad_prompt"
E_HASH_MISMATCH = "hash_mismatch"
E_BUSY = "busy"
E_CANCELLED = "cancelled"
E_INTERNAL = "internal"

ERROR_CODES = frozenset({
    E_BAD_REQUEST, E_PROTOCOL_VERSION, E_AUTH, E_UNKNOWN_METHOD, E_UNKNOWN_SESSION, E_SESSION_EVICTED,
    E_UNKNOWN_IMAGE, E_TOO_LARGE, E_BAD_IMAGE, E_BAD_PROMPT, E_HASH_MISMATCH, E_BUSY, E_CANCELLED, E_INTERNAL,
})

METHODS = ("hello", "open_image", "predict", "reset", "close", "batch", "cancel")


class ProtocolError(ValueError):
    """A message that does not follow the protocol; ``code`` is one of the error codes above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id: str | None = None


@dataclass
class Request:
    """A decoded request: header fields plus the raw buffers (bytes-like, never copied)."""

    version: int
    token: str
    id: str
    method: str
    args: dict[str, Any]
    buffers: list[Any]
    stream: bool = False


def new_request_id() -> str:
    return uuid.uuid4().hex


def content_hash(pixels: bytes | bytearray | memoryview, width: int, height: int, channels: int) -> str:
    """Hash that identifies an image on the server: the geometry is part of it, so a reshaped buffer differs."""
    h = hashlib.sha256(f"{width}x{height}x{channels}:".encode())
    h.update(pixels)
    return h.hexdigest()


def new_token() -> str:
    return os.urandom(32).hex()


def _reject_constant(name: str) -> float:
    # json accepts NaN/Infinity by default; coordinates must be finite, so refuse them at the parser.
    raise ValueError(f"non-finite number {name} is not allowed")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def loads(data: bytes | bytearray | memoryview) -> Any:
    return json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)


def encode_request(method: str, args: dict[str, Any], buffers: list[Any] | tuple = (), *, token: str,
                   request_id: str | None = None, stream: bool = True,
                   version: int = PROTOCOL_VERSION) -> tuple[str, list[Any]]:
    """Return ``(request_id, frames)`` ready for ``send_multipart``."""
    rid = request_id or new_request_id()
    header = {"v": version, "token": token, "id": rid, "method": method, "args": args,
              "nbuf": len(buffers), "stream": stream}
    return rid, [dumps(header), *buffers]


def _frame_bytes(frame: Any) -> memoryview:
    # Accepts bytes or zmq.Frame (``.buffer``) without importing zmq here.
    buf = getattr(frame, "buffer", frame)
    return memoryview(buf)


def _peek_id(header: Any) -> str | None:
    rid = header.get("id") if isinstance(header, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None


def decode_request(frames: list[Any]) -> Request:
    """Parse a request's frames (after any routing envelope).

    Raises ProtocolError with a precise code; its ``request_id`` is set whenever the header named one, so the
    error reply can still be matched to the request by the client.
    """
    if not frames:
        raise ProtocolError(E_BAD_REQUEST, "empty message")
    head = _frame_bytes(frames[0])
    if head.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(E_TOO_LARGE, f"header of {head.nbytes} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(E_BAD_REQUEST, f"header is not valid JSON: {exc}") from None
    rid = _peek_id(header)
    try:
        return _decode_header(header, rid, list(frames[1:]))
    except ProtocolError as exc:
        exc.request_id = rid
        raise


def _decode_header(header: Any, rid: str | None, buffers: list[Any]) -> Request:
    if not isinstance(header, dict):
        raise ProtocolError(E_BAD_REQUEST, "header must be a JSON object")
    version = header.get("v")
    if type(version) is not int:
        raise ProtocolError(E_BAD_REQUEST, "header field 'v' (protocol version) must be an integer")
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(E_PROTOCOL_VERSION,
                            f"protocol version {version} is not supported (server speaks {list(SUPPORTED_VERSIONS)})")
    if rid is None:
        raise ProtocolError(E_BAD_REQUEST, "header field 'id' must be a non-empty string of at most 128 characters")
    token = header.get("token")
    if not isinstance(token, str):
        raise ProtocolError(E_AUTH, "missing token")
    method = header.get("method")
    if not isinstance(method, str):
        raise ProtocolError(E_BAD_REQUEST, "header field 'method' must be a string")
    args = header.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(E_BAD_REQUEST, "header field 'args' must be a JSON object")
    if len(buffers) > MAX_BUFFERS:
        raise ProtocolError(E_TOO_LARGE, f"{len(buffers)} buffers exceed the limit of {MAX_BUFFERS}")
    nbuf = header.get("nbuf", len(buffers))
    if type(nbuf) is not int or nbuf != len(buffers):
        raise ProtocolError(E_BAD_REQUEST,
                            f"header declares {short_repr(nbuf)} buffers but {len(buffers)} arrived")
    stream = header.get("stream", False)
    if not isinstance(stream, bool):
        raise ProtocolError(E_BAD_REQUEST, "header field 'stream' must be a boolean")
    return Request(version, token, rid, method, args, buffers, stream)


def encode_reply(request_id: str, result: dict[str, Any], buffers: list[Any] | tuple = ()) -> list[Any]:
    return [dumps({"v": PROTOCOL_VERSION, "id": request_id, "kind": KIND_REPLY, "result": result,
                   "nbuf": len(buffers)}), *buffers]


def encode_error(request_id: str | None, code: str, message: str, **details: Any) -> list[Any]:
    err = {"code": code, "message": message}
    if details:
        err["details"] = details
    return [dumps({"v": PROTOCOL_VERSION, "id": request_id, "kind": KIND_ERROR, "error": err, "nbuf": 0})]


def encode_progress(request_id: str, progress: dict[str, Any]) -> list[Any]:
    return [dumps({"v": PROTOCOL_VERSION, "id": request_id, "kind": KIND_PROGRESS, "progress": progress,
                   "nbuf": 0})]


@dataclass
class Reply:
    id: str | None
    kind: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None
    buffers: list[Any]
    version: int


def decode_reply(frames: list[Any]) -> Reply:
    """Parse a server message. Raises ProtocolError for anything a conforming server would not send."""
    if not frames:
        raise ProtocolError(E_BAD_REQUEST, "empty reply")
    try:
        header = loads(_frame_bytes(frames[0]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(E_BAD_REQUEST, f"reply header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("kind") not in (KIND_REPLY, KIND_ERROR, KIND_PROGRESS):
        raise ProtocolError(E_BAD_REQUEST, "reply header has no valid 'kind'")
    buffers = list(frames[1:])
    if header.get("nbuf", 0) != len(buffers):
        raise ProtocolError(E_BAD_REQUEST, "reply buffer count does not match its header")
    error = header.get("error")
    if header["kind"] == KIND_ERROR and not (isinstance(error, dict) and isinstance(error.get("code"), str)):
        raise ProtocolError(E_BAD_REQUEST, "error reply without a code")
    return Reply(header.get("id"), header["kind"], header.get("result"), error, header.get("progress"),
                 buffers, header.get("v", 0))


# ---- argument checks shared by both ends -------------------------------------------------------------


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: a hostile value can be a 4000-digit number or a 4 MB string."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_int(value: Any, name: str, lo: int = 0, hi: int | None = None) -> int:
    if type(value) is not int or value < lo or (hi is not None and value > hi):
        bound = f" in [{lo}, {hi}]" if hi is not None else f" >= {lo}"
        raise ProtocolError(E_BAD_REQUEST, f"'{name}' must be an integer{bound}, got {short_repr(value)}")
    return value


def check_finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(E_BAD_PROMPT, f"'{name}' must be a finite number, got {short_repr(value)}")
    return float(value)


def check_image_geometry(width: Any, height: Any, channels: Any, max_pixels: int = MAX_PIXELS) -> int:
    """Validate a declared image size before anything is allocated; return the expected byte count."""
    w = check_int(width, "width", 1)
    h = check_int(height, "height", 1)
    if channels not in CHANNELS or type(channels) is not int:
        raise ProtocolError(E_BAD_IMAGE, f"'channels' must be one of {CHANNELS} (8-bit gray, RGB, RGBA), "
                                         f"got {short_repr(channels)}")
    if w * h > max_pixels:
        # A declared size can be far beyond what a float holds.
        size = f"{w}x{h} = {w * h / 1e6:.2f} MP" if w * h < 10**18 else f"{short_repr(w)} x {short_repr(h)}"
        raise ProtocolError(E_TOO_LARGE, f"image of {size} exceeds the backend's limit of "
                                         f"{max_pixels} pixels ({max_pixels / 1e6:.2f} MP)")
    return w * h * channels


def expand_crop(crop: bytes | memoryview, x: int, y: int, w: int, h: int, width: int, height: int) -> bytes:
    """Paste a ``w``×``h`` uint8 crop at (x, y) into a zero ``width``×``height`` plane (pure Python)."""
    if w == width and h == height and x == 0 and y == 0:
        return bytes(crop)
    if w < 0 or h < 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ProtocolError(E_BAD_REQUEST, f"crop {w}x{h}+{x}+{y} does not fit a {width}x{height} image")
    if len(crop) != w * h:
        raise ProtocolError(E_BAD_REQUEST, f"crop has {len(crop)} bytes, expected {w * h}")
    src = memoryview(crop)
    if w == width:
        # Whole rows: the crop is one contiguous run of the plane.
        return b"".join((bytes(y * width), src, bytes((height - y - h) * width)))
    # One join builds the plane in a single allocation; a per-row loop into a bytearray copies it twice.
    left, right = bytes(x), bytes(width - x - w)
    parts: list[bytes | memoryview] = [bytes(y * width)]
    for row in range(h):
        parts += (left, src[row * w:(row + 1) * w], right)
    parts.append(bytes((height - y - h) * width))
    return b"".join(parts)
