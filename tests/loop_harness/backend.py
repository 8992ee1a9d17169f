"""A rule-following stand-in backend for the real-editor loop tests: the real protocol server, a fake engine.

The engine answers by rules instead of a model, so a test knows exactly which pixels a round may change: a box
fills its rectangle (and starts the matte over), and every click and scribble sets the pixels it covers to its
side (a negative stroke clears them, a positive one fills them); everything else stays as the previous round
left it. The server is the project's own (``backend.serving.server``), so the plug-ins talk to it exactly as to
the real backend. It runs in a thread of the test process and listens on loopback TCP, which the editors in the
Debian 13 root reach through the shared network namespace.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLICK_RADIUS = 6


class RuleEngine:
    """Engine API (``open / fork / predict / reset / close``) answered by the rules above."""

    model_name = "rules"

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._images: dict[str, tuple[int, int]] = {}
        self._alpha: dict[str, np.ndarray | None] = {}
        self.rounds: list[dict] = []

    def open(self, image: np.ndarray) -> str:
        sid = f"rules-{next(self._ids)}"
        self._images[sid] = image.shape[:2]
        self._alpha[sid] = None
        return sid

    def fork(self, sid: str) -> str:
        new = f"rules-{next(self._ids)}"
        self._images[new] = self._images[sid]
        self._alpha[new] = None
        return new

    def reset(self, sid: str) -> None:
        self._alpha[sid] = None

    def close(self, sid: str) -> None:
        self._images.pop(sid, None)
        self._alpha.pop(sid, None)

    def predict(self, sid: str, prompts: dict) -> np.ndarray:
        h, w = self._images[sid]
        previous = self._alpha[sid]
        alpha = np.zeros((h, w), np.uint8) if previous is None else previous.copy()
        box = prompts.get("box")
        if box:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            alpha[:] = 0
            alpha[max(0, y0):y1, max(0, x0):x1] = 255
        for x, y, positive in prompts.get("clicks") or []:
            cv2.circle(alpha, (int(round(x)), int(round(y))), CLICK_RADIUS, 255 if positive else 0, -1)
        for scribble in prompts.get("scribbles") or []:
            points = np.round(np.asarray(scribble["points"], np.float64)).astype(np.int32).reshape(-1, 1, 2)
            width = max(1, int(round(float(scribble.get("width") or 1))))
            cv2.polylines(alpha, [points], False, 255 if scribble["positive"] else 0, width)
        self._alpha[sid] = alpha
        self.rounds.append({"session": sid, "box": box, "clicks": len(prompts.get("clicks") or []),
                            "scribbles": len(prompts.get("scribbles") or []), "text": prompts.get("text")})
        return alpha.astype(np.float32) / 255.0


@dataclass
class RunningBackend:
    engine: RuleEngine
    endpoint: str
    config: Path


@contextmanager
def rule_backend(workdir: Path) -> Iterator[RunningBackend]:
    """The project's server around a :class:`RuleEngine`, plus the install config and token a plug-in reads."""
    try:
        from backend.serving.server import Server
    except ImportError:  # the layout before the backend moved into subpackages
        from backend.server import Server
    from dfimat_client.config import write_token
    from dfimat_client.protocol import new_token

    token = new_token()
    token_file = write_token(Path(workdir) / "token", token)
    engine = RuleEngine()
    server = Server(engine, endpoint="tcp://127.0.0.1:*", token=token)
    endpoint = server.bind()
    config = Path(workdir) / "config.json"
    # No backend command: the plug-in must find this server, never start another.
    config.write_text(json.dumps({"schema": 1, "endpoint": endpoint, "token_file": str(token_file),
                                  "backend_command": [], "device": "cpu", "version": "0.1.0"}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RunningBackend(engine, endpoint, config)
    finally:
        server.stop()
        thread.join(10)

