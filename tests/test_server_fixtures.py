"""Shared helpers for the backend service tests: the real engine on a tiny random checkpoint, an in-thread
server, raw-socket helpers. (Named ``test_*`` to sit with its tests; it defines no tests itself.)"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zmq

from backend.serving.server import Server
from dfimat_client import protocol as P

TOKEN = "t0k3n-for-tests"
REPO = Path(__file__).resolve().parent.parent


def tiny_engine(tmp_dir: Path) -> Any:
    """The real Engine on a random-initialised tiny checkpoint (plumbing only, no accuracy)."""
    torch.set_num_threads(1)
    from backend.dfimat.model import build_tiny_checkpoint
    from backend.runtime.engine import Engine

    weights = build_tiny_checkpoint(tmp_dir / "tiny.pt")
    return Engine.load(device="cpu", weights=weights)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tiny_engine(tmp_path_factory.mktemp("weights"))


@contextmanager
def running_server(engine: Any, **kw: Any) -> Iterator[Server]:
    kw.setdefault("endpoint", "tcp://127.0.0.1:*")
    kw.setdefault("token", TOKEN)
    server = Server(engine, **kw)
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)
        assert not thread.is_alive(), "server loop did not stop"


@pytest.fixture
def server(engine: Any) -> Iterator[Server]:
    with running_server(engine) as srv:
        yield srv


def rgb_image(width: int = 48, height: int = 40, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8).tobytes()


def free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


class RawPeer:
    """A DEALER socket for sending hand-made (often broken) messages to the server."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, frames: list[Any]) -> None:
        self.sock.send_multipart(frames)

    def final(self, timeout: float = 5.0) -> P.Reply:
        """The next reply or error (progress messages skipped)."""
        while True:
            assert self.sock.poll(int(timeout * 1000)), "no reply from the server"
            frames = self.sock.recv_multipart()
            if frames and frames[0] == b"":
                frames = frames[1:]  # we sent an empty first frame, so the server echoed it as an envelope
            reply = P.decode_reply(frames)
            if reply.kind != P.KIND_PROGRESS:
                return reply

    def call(self, method: str, args: dict | None = None, buffers: list | tuple = (), token: str = TOKEN,
             **kw: Any) -> P.Reply:
        _, frames = P.encode_request(method, args or {}, buffers, token=token, **kw)
        self.send(frames)
        return self.final()

    def close(self) -> None:
        self.sock.close(linger=0)


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
