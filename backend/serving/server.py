"""The DFIMat backend service: one model, many clients, over a ZeroMQ ROUTER socket.

Threads: the main thread owns the ROUTER socket and answers ``hello`` and ``cancel`` at once, keeps a
heartbeat going to clients that wait, and watches the parent process. A single worker thread owns every
engine call (the engine is not thread-safe and the machine has few cores) and hands replies back over an
inproc socket, because ZeroMQ sockets must not be shared between threads.

The wire format lives in ``dfimat_client.protocol`` and is described in docs/protocol.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import zmq

from backend import __version__
from backend.serving.sessions import DEFAULT_BUDGET_BYTES, DEFAULT_MAX_SESSIONS, Session, SessionStore
from backend.serving.strokes import mask_to_prompts
from dfimat_client import protocol as P

log = logging.getLogger("dfimat.server")

HEARTBEAT_SECONDS = 0.5
MAX_QUEUED = 64
REPLY_CACHE_ENTRIES = 16
REPLY_CACHE_BYTES = 128 * 1024**2
_POLL_MS = 100
_WORKER_METHODS = ("open_image", "predict", "reset", "close", "batch")
# ZeroMQ's per-frame cap comes from the protocol's ceiling, never from --max-pixels: a frame over the cap
# makes ZeroMQ drop the peer without a word, which a client can only read as "backend not running". Frames
# between the configured limit and the ceiling reach Python and get a ``too_large`` reply.
MAX_FRAME_BYTES = max(P.MAX_PIXELS * max(P.CHANNELS), P.MAX_HEADER_BYTES) + 64 * 1024
# A matte whose bounding box covers more than this share of the image is sent whole: cropping it would save
# little on the wire and cost a copy on both ends.
CROP_MAX_SHARE = 0.5


class EndpointError(ValueError):
    """The endpoint is not allowed (non-loopback without --allow-remote) or cannot be used."""


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and inproc:// endpoints and tcp:// bound to a loopback address."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp" or not rest:
        return False
    host = urlsplit(f"//{rest}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', interface names and host names could reach the network


def check_endpoint(endpoint: str, allow_remote: bool = False) -> None:
    if "://" not in endpoint:
        raise EndpointError(f"endpoint {endpoint!r} must look like tcp://127.0.0.1:5599 or ipc:///path")
    if not allow_remote and not is_loopback_endpoint(endpoint):
        raise EndpointError(f"refusing to listen on {endpoint}: only loopback or ipc endpoints are allowed "
                            "(pass --allow-remote to expose the backend to the network)")


def alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    """alpha × 255, rounded and saturated to uint8 in one OpenCV pass; NaN becomes 0.

    Several numpy passes (scale, add, nan_to_num, clip, cast) cost ~0.2 s at 24 MP, which the server added to
    every round; this is ~7× faster. The engine never returns infinities (their result is platform-defined).
    """
    a = np.ascontiguousarray(alpha, dtype=np.float32)
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    # OpenCV reads a 2-D array as one channel; any other shape is flattened to rows and restored.
    plane = a if a.ndim == 2 else a.reshape(1, -1)
    return cv2.multiply(plane, 255.0, dtype=cv2.CV_8U).reshape(a.shape)


def crop_box(a8: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x, y, w, h) of the non-zero alpha; (0, 0, 0, 0) when the matte is empty."""
    rows = np.flatnonzero(a8.any(axis=1))
    if rows.size == 0:
        return 0, 0, 0, 0
    cols = np.flatnonzero(a8.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return x0, y0, x1 - x0, y1 - y0


def image_from_buffer(buf: Any, width: int, height: int, channels: int) -> np.ndarray:
    """H×W×3 uint8 RGB of 8-bit gray/RGB/RGBA pixels (straight alpha is dropped).

    RGB is a read-only view of ``buf``, not a copy: the session keeps the received frame alive instead of a
    second 72 MB array at 24 MP, and the engine only reads its image.
    """
    arr = np.frombuffer(buf, dtype=np.uint8).reshape(height, width, channels)
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    if channels == 4:
        return np.ascontiguousarray(arr[:, :, :3])
    return arr


def _prompt_error_types() -> tuple[type[BaseException], ...]:
    from backend.dfimat.prompts import PromptError

    return (PromptError,)


@dataclass
class Job:
    request: P.Request
    route: list[bytes]
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False


class Server:
    """Serve one engine on ``endpoint``. ``bind()`` then ``serve_forever()``; ``stop()`` from any thread."""

    def __init__(self, engine: Any, *, endpoint: str, token: str, allow_remote: bool = False,
                 max_pixels: int = P.MAX_PIXELS, session_budget: int = DEFAULT_BUDGET_BYTES,
                 max_sessions: int = DEFAULT_MAX_SESSIONS, device: str = "cpu", model_name: str | None = None,
                 people: Callable[[np.ndarray], list[list[float]]] | None = None,
                 parent_pid: int | None = None, heartbeat: float = HEARTBEAT_SECONDS,
                 context: zmq.Context | None = None) -> None:
        if not token:
            raise ValueError("the server needs a non-empty token")
        check_endpoint(endpoint, allow_remote)
        self.engine = engine
        self.endpoint = endpoint
        self._token = token.encode()
        self.max_pixels = min(int(max_pixels), P.MAX_PIXELS)
        self.sessions = SessionStore(engine, session_budget, max_sessions)
        self.device = device
        self.model_name = model_name or getattr(engine, "model_name", None) or "dfimat-s"
        self._people = people
        self.parent_pid = parent_pid
        self.heartbeat = heartbeat
        self._ctx = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._inflight: dict[str, Job] = {}
        self._replies: OrderedDict[str, list[Any]] = OrderedDict()
        self._router: zmq.Socket | None = None
        self._pull: zmq.Socket | None = None
        self._inproc = f"inproc://dfimat-worker-{id(self)}-{os.getpid()}"
        self._worker: threading.Thread | None = None
        self.bound_endpoint: str | None = None
        self.stats = {"requests": 0, "errors": 0}

    # ---------------------------------------------------------------- lifecycle

    def bind(self) -> str:
        """Bind the sockets and start the worker; return the actual endpoint (ports resolved)."""
        ipc_path = self._ipc_path()
        if ipc_path is not None:
            ipc_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if ipc_path.exists() and self._someone_answers(self.endpoint):
                raise EndpointError(f"another DFIMat backend is already serving {self.endpoint}")
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        # The guard against bogus multi-GB frames: ZeroMQ drops such a peer before the frame is assembled.
        router.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        try:
            router.bind(self.endpoint)
        except zmq.ZMQError as exc:
            router.close()
            raise EndpointError(f"cannot listen on {self.endpoint}: {exc}") from None
        if ipc_path is not None:
            os.chmod(ipc_path, 0o600)
        self._router = router
        self.bound_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(self._inproc)
        self._worker = threading.Thread(target=self._work, name="dfimat-worker", daemon=True)
        self._worker.start()
        return self.bound_endpoint

    def stop(self) -> None:
        """Ask the loop to finish; safe from signal handlers and other threads."""
        self._stop.set()

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        if self._router is None:
            self.bind()
        assert self._router is not None and self._pull is not None
        if on_ready is not None:
            on_ready(self.bound_endpoint or self.endpoint)
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        next_beat = time.monotonic() + self.heartbeat
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(_POLL_MS))
                if self._pull in events:
                    self._drain_worker()
                if self._router in events:
                    self._drain_router()
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.heartbeat
                    self._beat()
                    if self.parent_pid is not None and not _pid_alive(self.parent_pid):
                        log.info("parent process %s is gone; stopping", self.parent_pid)
                        self._stop.set()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._stop.set()
        for job in list(self._inflight.values()):
            job.cancel.set()
        self._jobs.put(None)
        if self._worker is not None:
            # A model call cannot be interrupted; do not hang the exit on it (the thread is a daemon).
            self._worker.join(timeout=5.0)
        for sock in (self._router, self._pull):
            if sock is not None:
                sock.close(linger=0)
        self._router = self._pull = None
        if self._worker is None or not self._worker.is_alive():
            self.sessions.close_all()
        ipc_path = self._ipc_path()
        if ipc_path is not None:
            try:
                ipc_path.unlink()
            except OSError:
                pass

    def _ipc_path(self) -> Path | None:
        if not self.endpoint.startswith("ipc://"):
            return None
        return Path(self.endpoint[len("ipc://"):])

    def _someone_answers(self, endpoint: str) -> bool:
        # A stale socket file from a crashed backend is fine to replace; a live one is not.
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(endpoint)
            _, frames = P.encode_request("hello", {}, token="", stream=False)
            sock.send_multipart(frames)
            return bool(sock.poll(300, zmq.POLLIN))
        finally:
            sock.close(linger=0)

    # ---------------------------------------------------------------- main thread

    def _drain_router(self) -> None:
        assert self._router is not None
        for _ in range(256):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._handle(frames)
            except Exception:  # this loop serves every client: one message it cannot handle must not end it
                log.exception("could not handle a message")
                error = P.encode_error(None, P.E_INTERNAL, "the backend could not handle this message")
                self._send([frames[0].bytes], error)

    def _handle(self, frames: list[Any]) -> None:
        route = [frames[0].bytes]
        rest = frames[1:]
        if rest and len(rest[0]) == 0:
            # A REQ client puts an empty delimiter frame before the header; keep it in the reply route.
            route.append(b"")
            rest = rest[1:]
        self.stats["requests"] += 1
        try:
            req = P.decode_request(rest)
        except P.ProtocolError as exc:
            self._send(route, P.encode_error(exc.request_id, exc.code, exc.message))
            return
        if not hmac.compare_digest(_utf8(req.token), self._token):
            self._send(route, P.encode_error(req.id, P.E_AUTH, "wrong token: the backend refuses this request"))
            return
        if req.method == "hello":
            self._send(route, P.encode_reply(req.id, self._hello()))
        elif req.method == "cancel":
            self._send(route, self._cancel(req))
        elif req.method in _WORKER_METHODS:
            self._enqueue(req, route)
        else:
            self._send(route, P.encode_error(req.id, P.E_UNKNOWN_METHOD,
                                             f"unknown method {req.method[:64]!r}; known: {', '.join(P.METHODS)}"))

    def _enqueue(self, req: P.Request, route: list[bytes]) -> None:
        job = self._inflight.get(req.id)
        if job is not None:
            # A retry of a request still running (lazy pirate reconnect): answer on the newest route.
            job.route = route
            job.request.stream = req.stream
            return
        cached = self._replies.get(req.id)
        if cached is not None:
            self._send(route, cached)
            return
        if len(self._inflight) >= MAX_QUEUED:
            self._send(route, P.encode_error(req.id, P.E_BUSY, f"the backend has {MAX_QUEUED} requests queued; "
                                                               "try again later"))
            return
        job = Job(req, route)
        self._inflight[req.id] = job
        self._jobs.put(job)

    def _cancel(self, req: P.Request) -> list[Any]:
        target = req.args.get("request")
        if not isinstance(target, str):
            return P.encode_error(req.id, P.E_BAD_REQUEST, "cancel needs 'request': the id of the request to cancel")
        job = self._inflight.get(target)
        if job is not None:
            job.cancel.set()
        return P.encode_reply(req.id, {"cancelled": job is not None, "running": bool(job and job.started)})

    def _hello(self) -> dict[str, Any]:
        return {"protocol": P.PROTOCOL_VERSION, "versions": list(P.SUPPORTED_VERSIONS), "server": __version__,
                "device": self.device, "model": self.model_name, "capabilities": list(P.METHODS)
                + ["stroke_masks", "crop", "every_person", "progress"],
                "limits": {"max_pixels": self.max_pixels, "max_stroke_masks": P.MAX_STROKE_MASKS,
                           "max_batch_items": P.MAX_BATCH_ITEMS, "max_header_bytes": P.MAX_HEADER_BYTES},
                "sessions": len(self.sessions)}

    def _beat(self) -> None:
        for job in self._inflight.values():
            if job.request.stream:
                state = "working" if job.started else "queued"
                self._send(job.route, P.encode_progress(job.request.id, {"state": state}))

    def _drain_worker(self) -> None:
        assert self._pull is not None
        for _ in range(256):
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            rid, kind, msg = frames[0].bytes.decode("utf-8", "surrogatepass"), frames[1].bytes, frames[2:]
            job = self._inflight.get(rid)
            if kind == b"start":
                if job is not None:
                    job.started = True
            elif kind == b"progress":
                if job is not None and job.request.stream:
                    self._send(job.route, msg)
            else:
                job = self._inflight.pop(rid, None)
                self._remember(rid, msg)
                if job is not None:
                    self._send(job.route, msg)

    def _remember(self, rid: str, msg: list[Any]) -> None:
        self._replies[rid] = msg
        total = sum(sum(len(f) for f in m) for m in self._replies.values())
        while self._replies and (len(self._replies) > REPLY_CACHE_ENTRIES or total > REPLY_CACHE_BYTES):
            _, old = self._replies.popitem(last=False)
            total -= sum(len(f) for f in old)

    def _send(self, route: list[bytes], frames: list[Any]) -> None:
        assert self._router is not None
        if frames and b'"kind":"error"' in bytes(frames[0])[:4096]:
            self.stats["errors"] += 1
        try:
            self._router.send_multipart([*route, *frames], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("client not reading; dropped a message")
        except zmq.ZMQError as exc:
            log.warning("could not send a reply: %s", exc)

    # ---------------------------------------------------------------- worker thread

    def _work(self) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self._inproc)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                rid = job.request.id
                if job.cancel.is_set():
                    push.send_multipart([_utf8(rid), b"done",
                                         *P.encode_error(rid, P.E_CANCELLED, "cancelled before it started")])
                    continue
                push.send_multipart([_utf8(rid), b"start"])

                def progress(info: dict[str, Any], rid: str = rid) -> None:
                    push.send_multipart([_utf8(rid), b"progress", *P.encode_progress(rid, info)])

                push.send_multipart([_utf8(rid), b"done", *self._run(job, progress)], copy=False)
        finally:
            push.close(linger=0)

    def _run(self, job: Job, progress: Callable[[dict[str, Any]], None]) -> list[Any]:
        req = job.request
        handler = getattr(self, f"_m_{req.method}")
        try:
            result, buffers = handler(req.args, req.buffers, job, progress)
            return P.encode_reply(req.id, result, buffers)
        except P.ProtocolError as exc:
            return P.encode_error(req.id, exc.code, exc.message)
        except _prompt_error_types() as exc:
            return P.encode_error(req.id, P.E_BAD_PROMPT, f"bad prompt: {exc}")
        except MemoryError:
            return P.encode_error(req.id, P.E_TOO_LARGE, "the backend ran out of memory for this request")
        except Exception as exc:  # the service must survive any single bad request
            log.exception("request %s (%s) failed", req.id, req.method)
            code = _engine_error_code(exc)
            return P.encode_error(req.id, code, f"{type(exc).__name__}: {exc}")

    # -- methods (worker thread) ----------------------------------------------------------------------

    def _m_open_image(self, args: dict, buffers: list, job: Job, progress: Callable) -> tuple[dict, list]:
        w, h, c = args.get("width"), args.get("height"), args.get("channels")
        nbytes = P.check_image_geometry(w, h, c, self.max_pixels)
        key = _optional_str(args, "key", P.MAX_KEY_LENGTH)
        want_hash = _optional_str(args, "hash", 64)
        if not buffers:
            return self._open_by_hash(key, want_hash), []
        if len(buffers) != 1:
            raise P.ProtocolError(P.E_BAD_REQUEST, f"open_image takes one pixel buffer, got {len(buffers)}")
        buf = memoryview(buffers[0].buffer if hasattr(buffers[0], "buffer") else buffers[0])
        if buf.nbytes != nbytes:
            raise P.ProtocolError(P.E_BAD_IMAGE, f"pixel buffer has {buf.nbytes} bytes but {w}x{h}x{c} needs {nbytes}")
        # Hashing costs ~0.1 s at 24 MP, so it happens only when the hash is used: to check the client's, or
        # to find the image again (by key, or by hash alone) later.
        digest = P.content_hash(buf, w, h, c) if key is not None or want_hash is not None else None
        if want_hash is not None and want_hash != digest:
            raise P.ProtocolError(P.E_HASH_MISMATCH, "the pixels do not match the declared content hash")
        s = self.sessions.find(key, digest) if digest is not None else None
        if s is not None:
            return _opened(s, cached=True), []
        s = self.sessions.open(image_from_buffer(buf, w, h, c), key, digest)
        return _opened(s, cached=False), []

    def _open_by_hash(self, key: str | None, want_hash: str | None) -> dict[str, Any]:
        """Continue the session of this key and image, else start one on an image the server already holds."""
        if want_hash is None:
            raise P.ProtocolError(P.E_BAD_REQUEST, "open_image needs the pixels or a content 'hash'")
        s = self.sessions.find(key, want_hash)
        if s is not None:
            return _opened(s, cached=True)
        source = self.sessions.find_image(want_hash)
        if source is None:
            raise P.ProtocolError(P.E_UNKNOWN_IMAGE, "the backend does not have this image; send its pixels")
        return _opened(self.sessions.open(source.image, key, want_hash, source=source), cached=False)

    def _m_predict(self, args: dict, buffers: list, job: Job, progress: Callable) -> tuple[dict, list]:
        s = self.sessions.get(args.get("session"))
        prompts = self._prompts(args.get("prompts"), buffers, s.width, s.height)
        alpha = self.engine.predict(s.engine_sid, prompts)
        meta, out = encode_alpha(alpha, s.width, s.height, crop=args.get("crop", True) is not False)
        rules = getattr(self.engine, "rules", None)
        if callable(rules):
            # Which of the engine's rules shaped this answer: in the reply for clients that show it, and in the
            # log of a backend started with -v.
            rounds = rules(s.engine_sid)
            meta["rules"] = fired = list(rounds[-1]) if rounds else []
            log.info("predict %s round %d: rules %s", s.sid, len(rounds), ", ".join(fired) or "none")
        return meta, out

    def _m_reset(self, args: dict, buffers: list, job: Job, progress: Callable) -> tuple[dict, list]:
        s = self.sessions.reset(args.get("session"))
        return {"session": s.sid}, []

    def _m_close(self, args: dict, buffers: list, job: Job, progress: Callable) -> tuple[dict, list]:
        self.sessions.close(args.get("session"))
        return {"closed": True}, []

    def _m_batch(self, args: dict, buffers: list, job: Job, progress: Callable) -> tuple[dict, list]:
        items = args.get("items")
        if not isinstance(items, list) or not items:
            raise P.ProtocolError(P.E_BAD_REQUEST, "batch needs a non-empty 'items' list")
        if len(items) > P.MAX_BATCH_ITEMS:
            raise P.ProtocolError(P.E_TOO_LARGE, f"{len(items)} batch items exceed {P.MAX_BATCH_ITEMS}")
        crop = args.get("crop", True) is not False
        # Check every item before the first slow step, so a bad item fails fast and costs nothing.
        plans = [self._batch_item(i, item, buffers) for i, item in enumerate(items)]
        results: list[dict] = []
        out: list[Any] = []
        for i, (image_buf, geom, prompts, every, problem) in enumerate(plans):
            if job.cancel.is_set():
                break
            progress({"state": "working", "done": i, "total": len(plans)})
            if problem is not None:
                results.append({"item": i, "masks": [], "error": problem})
                continue
            try:
                masks = self._matte_item(image_buf, geom, prompts, every, job.cancel)
            except P.ProtocolError as exc:
                results.append({"item": i, "masks": [], "error": {"code": exc.code, "message": exc.message}})
                continue
            except _prompt_error_types() as exc:
                results.append({"item": i, "masks": [], "error": {"code": P.E_BAD_PROMPT, "message": str(exc)}})
                continue
            entry = []
            for box, alpha in masks:
                meta, bufs = encode_alpha(alpha, geom[0], geom[1], crop=crop)
                meta["buffer"] = len(out)
                meta["box"] = box
                out.extend(bufs)
                entry.append(meta)
            results.append({"item": i, "masks": entry, "error": None})
        cancelled = job.cancel.is_set()
        progress({"state": "done", "done": len(results), "total": len(plans)})
        return {"results": results, "cancelled": cancelled}, out

    def _batch_item(self, i: int, item: Any, buffers: list) -> tuple[Any, tuple[int, int, int], dict, bool,
                                                                     dict | None]:
        """Check one item. Framing faults fail the whole request; a bad prompt only fails its item."""
        if not isinstance(item, dict):
            raise P.ProtocolError(P.E_BAD_REQUEST, f"batch item {i} must be an object")
        w, h, c = item.get("width"), item.get("height"), item.get("channels")
        nbytes = P.check_image_geometry(w, h, c, self.max_pixels)
        k = P.check_int(item.get("buffer", i), f"items[{i}].buffer", 0, len(buffers) - 1 if buffers else 0)
        if k >= len(buffers):
            raise P.ProtocolError(P.E_BAD_REQUEST, f"batch item {i} refers to buffer {k}, only {len(buffers)} sent")
        buf = memoryview(buffers[k].buffer if hasattr(buffers[k], "buffer") else buffers[k])
        if buf.nbytes != nbytes:
            raise P.ProtocolError(P.E_BAD_IMAGE, f"batch item {i}: buffer {k} has {buf.nbytes} bytes, "
                                                 f"{w}x{h}x{c} needs {nbytes}")
        every = item.get("every_person", False)
        if not isinstance(every, bool):
            raise P.ProtocolError(P.E_BAD_REQUEST, f"batch item {i}: 'every_person' must be a boolean")
        prompts = item.get("prompts") or {}
        problem = None
        if not isinstance(prompts, dict) or "stroke_masks" in prompts:
            problem = {"code": P.E_BAD_PROMPT, "message": "'prompts' must be an object without stroke masks"}
        elif not every or prompts:
            try:
                self._validate(prompts, w, h)
            except _prompt_error_types() as exc:
                problem = {"code": P.E_BAD_PROMPT, "message": str(exc)}
        return buf, (w, h, c), prompts, every, problem

    def _matte_item(self, buf: Any, geom: tuple[int, int, int], prompts: dict, every: bool,
                    cancel: threading.Event) -> list[tuple[list[float] | None, np.ndarray]]:
        from backend.runtime.people import matte_people

        image = image_from_buffer(buf, *geom)
        return matte_people(self.engine, image, prompts, every_person=every, detector=self._people, cancel=cancel)

    def _prompts(self, raw: Any, buffers: list, width: int, height: int) -> dict[str, Any]:
        """Merge stroke masks into the round's prompts and validate the result against the image size."""
        if not isinstance(raw, dict):
            raise P.ProtocolError(P.E_BAD_PROMPT, "'prompts' must be an object")
        prompts = dict(raw)
        strokes = prompts.pop("stroke_masks", None) or []
        if not isinstance(strokes, list) or len(strokes) > P.MAX_STROKE_MASKS:
            raise P.ProtocolError(P.E_BAD_PROMPT, f"'stroke_masks' must be a list of at most {P.MAX_STROKE_MASKS}")
        if len(strokes) != len(buffers):
            raise P.ProtocolError(P.E_BAD_REQUEST, f"{len(strokes)} stroke masks declared, {len(buffers)} buffers sent")
        if strokes:
            # The typed prompts are checked before the strokes are merged into them: a click list that is not
            # a list must be a prompt error, not a crash while merging.
            self._validate(prompts, width, height, allow_empty=True)
            clicks, scribbles = list(prompts.get("clicks") or []), list(prompts.get("scribbles") or [])
            for i, (meta, frame) in enumerate(zip(strokes, buffers, strict=True)):
                mask, x, y, positive = _stroke_mask(i, meta, frame, width, height)
                converted = mask_to_prompts(mask, x, y, positive, image_size=(width, height))
                clicks += converted.clicks
                scribbles += converted.scribbles
            prompts["clicks"], prompts["scribbles"] = clicks, scribbles
        self._validate(prompts, width, height)
        return prompts

    @staticmethod
    def _validate(prompts: dict, width: int, height: int, allow_empty: bool = False) -> None:
        from backend.dfimat.prompts import RoundPrompts

        try:
            RoundPrompts.from_dict(prompts, width, height, allow_empty=allow_empty)
        except OverflowError as exc:  # a coordinate too big for a float (JSON integers have no size limit)
            raise P.ProtocolError(P.E_BAD_PROMPT, f"bad prompt: {exc}") from None


def encode_alpha(alpha: np.ndarray, width: int, height: int, crop: bool = True) -> tuple[dict, list]:
    """uint8 alpha frame for the wire, cropped to its bounding box unless ``crop`` is False.

    A box covering most of the image is widened to the whole image (any box holding every non-zero pixel is a
    valid answer). The frame is a flat uint8 array, which ZeroMQ sends without another copy.
    """
    a8 = alpha_to_uint8(alpha)
    if a8.shape != (height, width):
        raise P.ProtocolError(P.E_INTERNAL, f"engine returned a {a8.shape} matte for a {width}x{height} image")
    x, y, w, h = crop_box(a8) if crop else (0, 0, width, height)
    if w * h > CROP_MAX_SHARE * width * height:
        x, y, w, h = 0, 0, width, height
    data = np.ascontiguousarray(a8[y:y + h, x:x + w]).reshape(-1) if w and h else b""
    return {"width": width, "height": height, "x": x, "y": y, "w": w, "h": h}, [data]


def _opened(s: Session, cached: bool) -> dict[str, Any]:
    # ``cached``: an existing session goes on with its prompt rounds; False means a fresh session.
    return {"session": s.sid, "cached": cached, "width": s.width, "height": s.height}


def _stroke_mask(i: int, meta: Any, frame: Any, width: int, height: int) -> tuple[np.ndarray, int, int, bool]:
    if not isinstance(meta, dict):
        raise P.ProtocolError(P.E_BAD_PROMPT, f"stroke mask {i} must be an object")
    w = P.check_int(meta.get("width"), f"stroke_masks[{i}].width", 1, width)
    h = P.check_int(meta.get("height"), f"stroke_masks[{i}].height", 1, height)
    x = P.check_int(meta.get("x", 0), f"stroke_masks[{i}].x", -width, width)
    y = P.check_int(meta.get("y", 0), f"stroke_masks[{i}].y", -height, height)
    positive = meta.get("positive", True)
    if not isinstance(positive, bool):
        raise P.ProtocolError(P.E_BAD_PROMPT, f"stroke_masks[{i}].positive must be true or false")
    buf = memoryview(frame.buffer if hasattr(frame, "buffer") else frame)
    if buf.nbytes != w * h:
        raise P.ProtocolError(P.E_BAD_PROMPT, f"stroke mask {i} has {buf.nbytes} bytes, {w}x{h} needs {w * h}")
    return np.frombuffer(buf, dtype=np.uint8).reshape(h, w), x, y, positive


def _optional_str(args: dict, name: str, limit: int) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise P.ProtocolError(P.E_BAD_REQUEST, f"'{name}' must be a string of 1..{limit} characters")
    return value


def _engine_error_code(exc: BaseException) -> str:
    try:
        from backend.runtime.engine import ImageError, SessionError
    except ImportError:
        return P.E_INTERNAL
    if isinstance(exc, SessionError):
        return P.E_UNKNOWN_SESSION
    if isinstance(exc, ImageError):
        return P.E_BAD_IMAGE
    return P.E_INTERNAL


def _utf8(text: str) -> bytes:
    # JSON can carry lone surrogates, which plain str.encode() refuses; they must fail a comparison, not the
    # server loop.
    return text.encode("utf-8", "surrogatepass")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return _pid_alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_alive_windows(pid: int) -> bool:
    import ctypes

    synchronize, wait_timeout = 0x00100000, 0x102
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return False
    try:
        return kernel32.WaitForSingleObject(handle, 0) == wait_timeout
    finally:
        kernel32.CloseHandle(handle)


