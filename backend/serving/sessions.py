"""Server-side image sessions: found by (key, content hash) or by hash alone, evicted least-recently-used
under a memory budget.

Server session ids are issued here, not taken from the engine, and carry a random per-process prefix: after a
backend restart an old id is reported as unknown instead of silently naming a different image.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from dfimat_client.protocol import E_SESSION_EVICTED, E_UNKNOWN_SESSION, ProtocolError, short_repr

# Without a figure from the engine a session is charged this many bytes per image pixel: the RGB copy plus
# the cached image features and the previous round's mask, which is what stays resident between rounds.
DEFAULT_BYTES_PER_PIXEL = 16
DEFAULT_BUDGET_BYTES = 2 * 1024**3
DEFAULT_MAX_SESSIONS = 32
_EVICTED_MEMORY = 4096  # how many evicted ids are remembered to tell "evicted" from "never existed"


@dataclass
class Session:
    sid: str
    engine_sid: str
    key: str | None
    image_hash: str | None  # None when the image was opened without key or hash, so it was never hashed
    width: int
    height: int
    cost: int
    last_used: float = field(default_factory=time.monotonic)
    # The H×W×3 array the engine session was opened on (the engine keeps the same array, so this costs
    # nothing): a later open by hash starts a new session on it without the pixels crossing the wire again.
    image: Any = field(default=None, repr=False)


class SessionStore:
    """LRU of engine sessions. Methods are serialised by a lock; engine calls happen inside it."""

    def __init__(self, engine: Any, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 bytes_per_pixel: int = DEFAULT_BYTES_PER_PIXEL) -> None:
        if budget_bytes <= 0 or max_sessions <= 0:
            raise ValueError("session budget and maximum count must be positive")
        self.engine = engine
        self.budget_bytes = budget_bytes
        self.max_sessions = max_sessions
        self.bytes_per_pixel = bytes_per_pixel
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._evicted: OrderedDict[str, None] = OrderedDict()
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)
        self._lock = threading.RLock()

    # -- queries ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def used_bytes(self) -> int:
        return sum(s.cost for s in self._sessions.values())

    def find(self, key: str | None, image_hash: str) -> Session | None:
        """The live session for this key and image, if any (keyless sessions are never shared)."""
        if key is None:
            return None
        with self._lock:
            for s in self._sessions.values():
                if s.key == key and s.image_hash == image_hash:
                    self._touch(s)
                    return s
        return None

    def find_image(self, image_hash: str) -> Session | None:
        """The most recently used live session on the image with this content hash, under any key or none."""
        with self._lock:
            for s in reversed(self._sessions.values()):
                if s.image_hash == image_hash and s.image is not None:
                    return s
        return None

    def get(self, sid: Any) -> Session:
        """The session ``sid``; ProtocolError ``session_evicted`` or ``unknown_session`` otherwise."""
        if not isinstance(sid, str):
            raise ProtocolError(E_UNKNOWN_SESSION, f"session id must be a string, got {short_repr(sid)}")
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                if sid in self._evicted:
                    raise ProtocolError(E_SESSION_EVICTED,
                                        f"session {sid} was evicted to stay within the memory budget; open the image again")
                raise ProtocolError(E_UNKNOWN_SESSION,
                                    f"unknown session {short_repr(sid)} (closed, or the backend restarted)")
            self._touch(s)
            return s

    # -- changes ---------------------------------------------------------------------------------------

    def open(self, image: Any, key: str | None, image_hash: str | None, source: Session | None = None) -> Session:
        """Encode ``image`` (H×W×3 uint8) in a new engine session, evicting old sessions to make room.

        A key names one editor layer: opening a different image under the same key replaces its session.
        ``source``, a live session on the same image, lends its encoding instead (``Engine.fork``).
        """
        height, width = int(image.shape[0]), int(image.shape[1])
        with self._lock:
            if key is not None:
                for old in [s for s in self._sessions.values() if s.key == key]:
                    self._drop(old.sid)
            estimate = width * height * self.bytes_per_pixel
            self._make_room(estimate)
            # The source may have been evicted just now to make room; then the image is encoded again.
            live = source is not None and self._sessions.get(source.sid) is source
            engine_sid = self.engine.fork(source.engine_sid) if live else self.engine.open(image)
            sid = f"{self._prefix}-{next(self._counter)}"
            cost = self._measure(engine_sid, estimate)
            s = Session(sid, engine_sid, key, image_hash, width, height, cost, image=image)
            self._sessions[sid] = s
            # The engine's own figure may exceed the estimate; evict others (never the new one) if needed.
            self._make_room(0, keep=sid)
            return s

    def close(self, sid: str) -> None:
        with self._lock:
            self.get(sid)
            self._drop(sid)

    def reset(self, sid: str) -> Session:
        with self._lock:
            s = self.get(sid)
            self.engine.reset(s.engine_sid)
            return s

    def close_all(self) -> None:
        with self._lock:
            for sid in list(self._sessions):
                self._drop(sid)

    # -- internals -------------------------------------------------------------------------------------

    def _touch(self, s: Session) -> None:
        s.last_used = time.monotonic()
        self._sessions.move_to_end(s.sid)

    def _measure(self, engine_sid: str, estimate: int) -> int:
        measure = getattr(self.engine, "session_nbytes", None)
        if callable(measure):
            try:
                return int(measure(engine_sid))
            except (KeyError, ValueError, TypeError):
                return estimate
        return estimate

    def _make_room(self, incoming: int, keep: str | None = None) -> None:
        while self._sessions:
            over_budget = self.used_bytes + incoming > self.budget_bytes
            over_count = len(self._sessions) + (1 if incoming else 0) > self.max_sessions
            if not (over_budget or over_count):
                return
            victim = next((sid for sid in self._sessions if sid != keep), None)
            if victim is None:
                return
            self._drop(victim, evicted=True)

    def _drop(self, sid: str, evicted: bool = False) -> None:
        s = self._sessions.pop(sid)
        try:
            self.engine.close(s.engine_sid)
        except KeyError:
            # Already gone inside the engine: nothing left to free.
            pass
        if evicted:
            self._evicted[sid] = None
            while len(self._evicted) > _EVICTED_MEMORY:
                self._evicted.popitem(last=False)
