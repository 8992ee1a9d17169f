"""The DFIMat backend client: pure Python + pyzmq, shared by the GIMP and Krita plugins.

Reliability follows ZeroMQ's "lazy pirate": every request waits with a poll, never on a blocking receive; if the
backend stays silent for ``timeout`` seconds the socket is closed, reopened and the request resent (the server
drops duplicates by request id), and after ``retries`` reconnects the call fails with ``BackendNotRunning``: a
dead backend is reported ``timeout × (retries + 1)`` seconds after it last spoke (30 s with the defaults; at
once for a missing ipc socket). Long model work does not time out: the backend sends a heartbeat every half
second while it works.

Blocking use (GIMP)::

    client = Client()                      # endpoint and token from the install config
    sid = client.open_image(rgba, w, h, 4, key="gimp:12:7")
    alpha, w, h = client.predict(sid, {"box": [10, 20, 200, 300]})

Non-blocking use (Krita's GUI thread): ``submit`` starts any of the calls and returns a ``Call``; a QTimer
calls ``call.done()`` (never blocks) until it is True, then ``call.result()``::

    call = client.submit("predict", sid, prompts, progress=on_progress)
    ...  # in a 20 ms QTimer slot:
    if call.done():
        alpha, w, h = call.result()

One Client must be used from one thread at a time (ZeroMQ sockets are not thread-safe); a worker thread may own
its own Client.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import zmq

from dfimat_client import protocol as P
from dfimat_client.config import Config, load_config
from dfimat_client.errors import BackendError, BackendNotRunning, ProtocolVersionError, from_reply

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2

Progress = Callable[[dict[str, Any]], None]


@dataclass
class _Req:
    method: str
    args: dict[str, Any]
    buffers: list[Any] = field(default_factory=list)


@dataclass
class _Pending:
    id: str
    frames: list[Any]
    method: str
    progress: Progress | None
    last_activity: float
    attempts: int = 0
    reply: P.Reply | None = None
    failure: BackendError | None = None
    discard: bool = False


@dataclass
class _SessionRecord:
    """What the client needs to rebuild a session the server evicted: the pixels and the rounds sent."""

    server_sid: str
    width: int
    height: int
    channels: int
    key: str | None
    digest: str | None  # only with a key: the hash is what finds the layer's session again
    pixels: bytes | None
    rounds: list[tuple[dict, list[Any]]] = field(default_factory=list)


@dataclass
class BatchResult:
    """``items[i]`` = {"masks": [{"alpha": bytes, "width", "height", "box"}], "error": BackendError | None}."""

    items: list[dict[str, Any]]
    cancelled: bool


Flow = Generator[_Req, tuple[dict, list], Any]


class Call:
    """A running client call. ``done()`` never blocks; ``result()`` waits and returns or raises."""

    def __init__(self, client: Client, flow: Flow, progress: Progress | None) -> None:
        self._client = client
        self._flow = flow
        self._progress = progress
        self._pending: _Pending | None = None
        self._finished = False
        self._value: Any = None
        self._error: BaseException | None = None
        self.last_progress: dict[str, Any] | None = None
        self._advance(None, None)

    @property
    def request_id(self) -> str | None:
        """Id of the request currently on the wire (what ``Client.cancel`` takes)."""
        return self._pending.id if self._pending else None

    def done(self) -> bool:
        """Process whatever has arrived, without waiting; True once the call has finished."""
        if not self._finished:
            self._client.pump(0)
            self._settle()
        return self._finished

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the outcome (``timeout`` caps the total wait; silence is caught by the client's own timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._settle():
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"no result within {timeout} s (request {self.request_id})")
            self._client.pump(wait)
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> None:
        """Ask the backend to stop this call (a running batch stops after the current image)."""
        if not self._finished and self._pending is not None:
            self._client.cancel(self._pending.id)

    def _on_progress(self, info: dict[str, Any]) -> None:
        self.last_progress = info
        if self._progress is not None:
            self._progress(info)

    def _settle(self) -> bool:
        while not self._finished and self._pending is not None:
            pending = self._pending
            if pending.failure is not None:
                self._advance(None, pending.failure)
            elif pending.reply is not None:
                reply = pending.reply
                if reply.kind == P.KIND_ERROR:
                    self._advance(None, from_reply(reply.error or {}))
                else:
                    self._advance((reply.result or {}, reply.buffers), None)
            else:
                break
        return self._finished

    def _advance(self, value: Any, error: BaseException | None) -> None:
        self._pending = None
        try:
            req = self._flow.throw(error) if error is not None else self._flow.send(value)
        except StopIteration as stop:
            self._finished, self._value = True, stop.value
        except BaseException as exc:  # handed to the caller by result()
            self._finished, self._error = True, exc
        else:
            self._pending = self._client._start(req, self._on_progress)


class Client:
    """Connection to the DFIMat backend. ``endpoint``/``token`` None → read the install config."""

    def __init__(self, endpoint: str | None = None, token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, *, config: Config | None = None, autostart: bool = False,
                 progress: Progress | None = None, remember_pixels: bool = True, watch_pid: int | None = None,
                 context: zmq.Context | None = None) -> None:
        if endpoint is None or token is None or autostart:
            config = config or load_config()
            endpoint = endpoint or config.endpoint
            token = token if token is not None else config.read_token()
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries non-negative")
        self.endpoint = endpoint
        self.config = config
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.autostart = autostart
        self.progress = progress
        self.remember_pixels = remember_pixels
        # The process whose exit stops an auto-started backend (default: this one). GIMP plug-ins pass
        # os.getppid(), GIMP itself, because each plug-in call is a short-lived process.
        self.watch_pid = watch_pid
        self._token = token
        self._ctx = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._pending: dict[str, _Pending] = {}
        self._sessions: dict[str, _SessionRecord] = {}
        self._lock = threading.RLock()
        self._backend_checked = False
        self.server_info: dict[str, Any] | None = None
        self.backend_process: Any = None  # a launcher.BackendProcess once ensure_backend started one

    # ------------------------------------------------------------------ public API (blocking)

    def hello(self) -> dict[str, Any]:
        """Versions, device, model name, capabilities and limits of the backend."""
        return self.submit("hello").result()

    def open_image(self, pixels: bytes | bytearray | memoryview, width: int, height: int, channels: int,
                   key: str | None = None) -> str:
        """Start a session on 8-bit gray/RGB/RGBA pixels (row-major, no padding); return its id.

        With a ``key`` (e.g. ``"gimp:<image-id>:<layer-id>"``) the backend is first asked by content hash, so a
        re-run on the same layer continues its session without sending or encoding the pixels again.
        """
        return self.submit("open_image", pixels, width, height, channels, key=key).result()

    def predict(self, session_id: str, prompts: dict[str, Any]) -> tuple[bytes, int, int]:
        """Add this round's prompts; return the whole image's alpha as uint8 bytes with its width and height.

        ``prompts`` follows the engine schema (box, clicks, scribbles, text) and may hold ``stroke_masks``:
        ``[{"positive": bool, "x": int, "y": int, "width": int, "height": int, "mask": bytes}, ...]`` where
        ``mask`` is the stroke layer's 8-bit alpha cropped to (x, y, width, height).
        """
        return self.submit("predict", session_id, prompts).result()

    def reset(self, session_id: str) -> None:
        """Forget the session's prompt rounds (the image encoding stays cached)."""
        self.submit("reset", session_id).result()

    def close(self, session_id: str) -> None:
        """End a session and free it on the backend."""
        self.submit("close", session_id).result()

    def batch(self, items: list[dict[str, Any]], progress: Progress | None = None) -> BatchResult:
        """Matte many images/layers in one request.

        Each item: ``{"pixels", "width", "height", "channels", "prompts": {...}, "every_person": bool}``; items
        may share one pixels object (sent once). ``every_person`` gives one matte per detected person.
        """
        return self.submit("batch", items, progress=progress).result()

    def cancel(self, request_id: str) -> None:
        """Ask the backend to cancel a request (fire and forget; see ``Call.cancel``)."""
        with self._lock:
            pending = self._start(_Req("cancel", {"request": request_id}), None)
            pending.discard = True

    def ensure_backend(self, start_timeout: float = 120.0) -> dict[str, Any]:
        """Check the backend answers; start it from the install config's command if it does not."""
        from dfimat_client.launcher import is_running, start_backend

        if not is_running(self.endpoint, self._token, timeout=min(self.timeout, 2.0), context=self._ctx):
            if self.config is None or not self.config.backend_command:
                raise BackendNotRunning(f"no backend at {self.endpoint} and no backend_command to start one")
            self.backend_process = start_backend(self.config, timeout=start_timeout, watch_pid=self.watch_pid)
        self._backend_checked = True
        return self.hello()

    def disconnect(self) -> None:
        """Close the socket; pending calls fail with BackendNotRunning."""
        with self._lock:
            for p in self._pending.values():
                if p.reply is None and p.failure is None:
                    p.failure = BackendNotRunning("the client was disconnected")
            self._pending.clear()
            self._close_socket()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # ------------------------------------------------------------------ public API (non-blocking)

    def submit(self, method: str, *args: Any, progress: Progress | None = None, **kwargs: Any) -> Call:
        """Start ``method`` (hello, open_image, predict, reset, close, batch) and return its ``Call``."""
        flows = {"hello": self._hello_flow, "open_image": self._open_flow, "predict": self._predict_flow,
                 "reset": self._reset_flow, "close": self._close_flow, "batch": self._batch_flow}
        if method not in flows:
            raise ValueError(f"unknown method {method!r}; one of {sorted(flows)}")
        if self.autostart and not self._backend_checked:
            self.ensure_backend()
        with self._lock:
            return Call(self, flows[method](*args, **kwargs), progress or self.progress)

    def pump(self, timeout: float = 0.0) -> None:
        """Receive and dispatch what has arrived (waiting at most ``timeout`` s), then handle silences."""
        with self._lock:
            sock = self._socket
            if sock is not None and sock.poll(int(max(0.0, timeout) * 1000), zmq.POLLIN):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._dispatch(frames)
            elif sock is None and timeout > 0:
                time.sleep(timeout)
            self._check_silence()

    # ------------------------------------------------------------------ flows

    def _hello_flow(self) -> Flow:
        result, _ = yield _Req("hello", {})
        versions = result.get("versions") or [result.get("protocol")]
        if P.PROTOCOL_VERSION not in versions:
            raise ProtocolVersionError(f"backend speaks protocol {versions}, this client {P.PROTOCOL_VERSION}")
        self.server_info = result
        return result

    def _open_flow(self, pixels: bytes | bytearray | memoryview, width: int, height: int, channels: int,
                   key: str | None = None) -> Flow:
        data = pixels if isinstance(pixels, bytes) else bytes(pixels)
        try:
            expected = P.check_image_geometry(width, height, channels)
        except P.ProtocolError as exc:
            raise BackendError(exc.code, exc.message) from None
        if len(data) != expected:
            raise BackendError(P.E_BAD_IMAGE, f"{len(data)} bytes of pixels, but {width}x{height}x{channels} "
                                              f"needs {expected}")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= P.MAX_KEY_LENGTH):
            raise ValueError(f"key must be a string of 1..{P.MAX_KEY_LENGTH} characters")
        # Hashing costs ~0.1 s at 24 MP; without a key nothing would look the image up by its hash.
        digest = P.content_hash(data, width, height, channels) if key is not None else None
        rec = _SessionRecord("", width, height, channels, key, digest, data if self.remember_pixels else None)
        yield from self._open_on_server(rec, data)
        self._sessions[rec.server_sid] = rec
        return rec.server_sid

    def _open_on_server(self, rec: _SessionRecord, data: bytes | None) -> Flow:
        args: dict[str, Any] = {"width": rec.width, "height": rec.height, "channels": rec.channels}
        if rec.key is not None:
            args["key"], args["hash"] = rec.key, rec.digest
            try:
                result, _ = yield _Req("open_image", args)
                rec.server_sid = result["session"]
                return
            except BackendError as exc:
                if exc.code != P.E_UNKNOWN_IMAGE:
                    raise
        if data is None:
            raise BackendError(P.E_SESSION_EVICTED, "the backend lost this image and the client kept no copy; "
                                                    "open it again")
        yield from self._check_server_limit(rec.width, rec.height, rec.channels)
        result, _ = yield _Req("open_image", args, [data])
        rec.server_sid = result["session"]

    def _check_server_limit(self, width: int, height: int, channels: int, what: str = "") -> Flow:
        """Refuse an image above the limit the backend announced in ``hello`` before its pixels are sent.

        The backend would answer ``too_large`` too, but only after receiving up to 400 MB for nothing.
        """
        if self.server_info is None:
            yield from self._hello_flow()
        limits = (self.server_info or {}).get("limits")
        limit = limits.get("max_pixels") if isinstance(limits, dict) else None
        if type(limit) is not int or limit <= 0:
            return
        try:
            P.check_image_geometry(width, height, channels, min(limit, P.MAX_PIXELS))
        except P.ProtocolError as exc:
            raise BackendError(exc.code, what + exc.message) from None

    def _predict_flow(self, session_id: str, prompts: dict[str, Any]) -> Flow:
        wire, buffers = _split_strokes(prompts)
        rec = self._sessions.get(session_id)
        server_sid = rec.server_sid if rec else session_id
        try:
            result, bufs = yield _Req("predict", {"session": server_sid, "prompts": wire, "crop": True}, buffers)
        except BackendError as exc:
            if exc.code not in (P.E_SESSION_EVICTED, P.E_UNKNOWN_SESSION) or rec is None or rec.pixels is None:
                raise
            # Transparent re-open: same pixels, then the earlier rounds again so the history matches.
            yield from self._open_on_server(rec, rec.pixels)
            for old_wire, old_bufs in rec.rounds:
                yield _Req("predict", {"session": rec.server_sid, "prompts": old_wire, "crop": True}, old_bufs)
            result, bufs = yield _Req("predict", {"session": rec.server_sid, "prompts": wire, "crop": True}, buffers)
        if rec is not None:
            rec.rounds.append((wire, buffers))
        return _expand(result, bufs)

    def _reset_flow(self, session_id: str) -> Flow:
        rec = self._sessions.get(session_id)
        try:
            yield _Req("reset", {"session": rec.server_sid if rec else session_id})
        except BackendError as exc:
            # An evicted session has no rounds left to forget; the next predict re-opens it fresh.
            if exc.code not in (P.E_SESSION_EVICTED, P.E_UNKNOWN_SESSION) or rec is None or rec.pixels is None:
                raise
        if rec is not None:
            rec.rounds.clear()

    def _close_flow(self, session_id: str) -> Flow:
        rec = self._sessions.pop(session_id, None)
        try:
            yield _Req("close", {"session": rec.server_sid if rec else session_id})
        except BackendError as exc:
            if exc.code not in (P.E_SESSION_EVICTED, P.E_UNKNOWN_SESSION) or rec is None:
                raise

    def _batch_flow(self, items: list[dict[str, Any]]) -> Flow:
        if not items:
            raise ValueError("batch needs at least one item")
        buffers: list[bytes] = []
        index: dict[int, int] = {}
        wire_items = []
        for i, item in enumerate(items):
            pixels = item["pixels"]
            w, h, c = item["width"], item["height"], item["channels"]
            try:
                expected = P.check_image_geometry(w, h, c)
            except P.ProtocolError as exc:
                raise BackendError(exc.code, f"batch item {i}: {exc.message}") from None
            if len(pixels) != expected:
                raise BackendError(P.E_BAD_IMAGE, f"batch item {i}: {len(pixels)} bytes, {w}x{h}x{c} needs {expected}")
            if id(pixels) not in index:
                index[id(pixels)] = len(buffers)
                buffers.append(pixels if isinstance(pixels, bytes) else bytes(pixels))
            wire_items.append({"width": w, "height": h, "channels": c, "buffer": index[id(pixels)],
                               "prompts": item.get("prompts") or {},
                               "every_person": bool(item.get("every_person", False))})
        for i, item in enumerate(wire_items):
            w, h, c = item["width"], item["height"], item["channels"]
            yield from self._check_server_limit(w, h, c, f"batch item {i}: ")
        result, bufs = yield _Req("batch", {"items": wire_items, "crop": True}, buffers)
        out = []
        for entry in result.get("results", []):
            err = entry.get("error")
            masks = []
            for m in entry.get("masks", []):
                alpha, w, h = _expand(m, [bufs[m["buffer"]]])
                masks.append({"alpha": alpha, "width": w, "height": h, "box": m.get("box")})
            out.append({"masks": masks, "error": from_reply(err) if err else None})
        return BatchResult(out, bool(result.get("cancelled")))

    # ------------------------------------------------------------------ transport

    def _start(self, req: _Req, progress: Progress | None) -> _Pending:
        rid, frames = P.encode_request(req.method, req.args, req.buffers, token=self._token)
        pending = _Pending(rid, frames, req.method, progress, time.monotonic())
        self._pending[rid] = pending
        self._send(pending)
        return pending

    def _ipc_socket_missing(self) -> str | None:
        if self.endpoint.startswith("ipc://"):
            path = self.endpoint[len("ipc://"):]
            if not os.path.exists(path):
                return path
        return None

    def _send(self, pending: _Pending) -> None:
        missing = self._ipc_socket_missing()
        if missing is not None:
            # Nothing can be listening: say so now instead of after timeout × retries of silence.
            pending.failure = BackendNotRunning(f"the DFIMat backend is not running (no socket at {missing})")
            self._pending.pop(pending.id, None)
            return
        if self._socket is None:
            self._socket = self._ctx.socket(zmq.DEALER)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(self.endpoint)
        try:
            self._socket.send_multipart(pending.frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass  # nothing connected yet and the queue is full: the silence check resends

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _dispatch(self, frames: list[Any]) -> None:
        try:
            reply = P.decode_reply(frames)
        except P.ProtocolError:
            return  # not a DFIMat server message; the silence check reports a dead peer
        if reply.version != P.PROTOCOL_VERSION and reply.kind == P.KIND_REPLY:
            reply = P.Reply(reply.id, P.KIND_ERROR, None,
                            {"code": P.E_PROTOCOL_VERSION,
                             "message": f"backend replied with protocol {reply.version}, client speaks "
                                        f"{P.PROTOCOL_VERSION}"}, None, [], reply.version)
        targets = [self._pending[reply.id]] if reply.id in self._pending else []
        if reply.id is None and reply.kind == P.KIND_ERROR:
            # The server could not read our header at all, so it cannot name the request: fail them all.
            targets = [p for p in self._pending.values() if p.reply is None and p.failure is None]
        now = time.monotonic()
        for p in targets:
            p.last_activity = now
            if reply.kind == P.KIND_PROGRESS:
                if p.progress is not None and reply.progress is not None:
                    try:
                        p.progress(reply.progress)
                    except Exception:  # a faulty progress callback must not break the transport
                        pass
            else:
                p.reply = reply
                del self._pending[p.id]

    def _check_silence(self) -> None:
        now = time.monotonic()
        silent = [p for p in self._pending.values() if now - p.last_activity > self.timeout]
        if not silent:
            return
        if any(p.attempts >= self.retries for p in silent):
            for p in silent:
                if p.attempts >= self.retries:
                    p.failure = BackendNotRunning(
                        f"no answer from the DFIMat backend at {self.endpoint} within {self.timeout:g} s "
                        f"({p.attempts + 1} attempts); is it running?")
                    del self._pending[p.id]
            silent = [p for p in silent if p.failure is None]
            if not silent:
                return
        # Lazy pirate: a fresh socket, then everything still waiting is sent again.
        self._close_socket()
        for p in list(self._pending.values()):
            if p in silent:
                p.attempts += 1
            p.last_activity = now
            self._send(p)


def _split_strokes(prompts: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    if not isinstance(prompts, dict):
        raise ValueError("prompts must be a dict")
    strokes = prompts.get("stroke_masks")
    if not strokes:
        return {k: v for k, v in prompts.items() if k != "stroke_masks"}, []
    wire = dict(prompts)
    meta, buffers = [], []
    for i, s in enumerate(strokes):
        mask = s.get("mask")
        w, h = s.get("width"), s.get("height")
        if not isinstance(mask, (bytes, bytearray, memoryview)) or not isinstance(w, int) or not isinstance(h, int) \
                or len(mask) != w * h:
            raise ValueError(f"stroke mask {i} needs 'mask' bytes of width*height (1 byte per pixel)")
        meta.append({k: s[k] for k in ("positive", "x", "y", "width", "height") if k in s})
        buffers.append(bytes(mask))
    wire["stroke_masks"] = meta
    return wire, buffers


def _expand(result: dict[str, Any], bufs: list[Any]) -> tuple[bytes, int, int]:
    width, height = int(result["width"]), int(result["height"])
    x, y, w, h = (int(result[k]) for k in ("x", "y", "w", "h"))
    crop = memoryview(bufs[0].buffer if hasattr(bufs[0], "buffer") else bufs[0]) if bufs else memoryview(b"")
    if w == 0 or h == 0:
        return bytes(width * height), width, height
    return P.expand_crop(crop, x, y, w, h, width, height), width, height
