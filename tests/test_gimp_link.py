"""The GIMP plug-in's backend link: user-facing errors without a running backend (no GIMP needed)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.editors import gimp_modules

link = gimp_modules.load("link")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_install_config_says_to_run_the_installer(tmp_path, monkeypatch):
    monkeypatch.setenv("DFIMAT_CONFIG", str(tmp_path / "nope.json"))
    with pytest.raises(link.UserError, match="install.py"):
        link.Link(timeout=0.5)


def test_backend_not_running_and_not_startable_is_a_clear_error(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("ab" * 16 + "\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"schema": 1, "endpoint": f"tcp://127.0.0.1:{_closed_port()}",
                                  "token_file": str(token), "backend_command": []}))
    monkeypatch.setenv("DFIMAT_CONFIG", str(config))
    ticks = []
    backend = link.Link(tick=ticks.append, timeout=0.3)
    with pytest.raises(link.UserError, match="not running"):
        backend.open_image(b"\0" * 12, 2, 2, 3, key="gimp:1:2")


@pytest.mark.parametrize(("name", "code", "needle"), [
    ("ProtocolVersionError", "protocol_version", "protocol version"),
    ("AuthError", "auth", "token"),
    ("BackendError", "bad_prompt", "could not use the prompt"),
    ("BackendError", "too_large", "too large"),
])
def test_backend_errors_become_sentences_that_say_what_to_do(name, code, needle):
    exc = type(name, (Exception,), {})("detail")
    exc.code = code
    assert needle in link.describe_error(exc)


@pytest.mark.slow
def test_link_starts_the_backend_which_stops_when_gimp_exits(tmp_path, monkeypatch):
    """GIMP's plug-in calls are short processes: the started backend must outlive them but not GIMP."""
    from backend.dfimat.model import build_tiny_checkpoint

    weights = build_tiny_checkpoint(tmp_path / "tiny.pt")
    token = tmp_path / "token"
    token.write_text("cd" * 16 + "\n")
    config = tmp_path / "config.json"
    endpoint = f"tcp://127.0.0.1:{_closed_port()}"
    config.write_text(json.dumps({
        "schema": 1, "endpoint": endpoint, "token_file": str(token), "device": "cpu",
        "backend_command": [sys.executable, "-m", "backend", "serve", "--weights", str(weights)],
    }))
    monkeypatch.setenv("DFIMAT_CONFIG", str(config))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    fake_gimp = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    monkeypatch.setattr(link.os, "getppid", lambda: fake_gimp.pid)
    try:
        backend = link.Link(timeout=60)
        session = backend.open_image(bytes(range(48)) * 4, 8, 8, 3, key="gimp:1:1")
        alpha, w, h = backend.predict(session, {"box": [1, 1, 6, 6]})
        assert (w, h) == (8, 8) and len(alpha) == 64
        backend.disconnect()
        again = link.Link(timeout=60)  # the next plug-in call finds the same backend
        assert again.open_image(bytes(range(48)) * 4, 8, 8, 3, key="gimp:1:1") == session
        again.disconnect()
    finally:
        fake_gimp.kill()
        fake_gimp.wait()
    from dfimat_client.launcher import is_running

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and is_running(endpoint, timeout=0.5):
        time.sleep(0.5)
    assert not is_running(endpoint, timeout=0.5), "the backend outlived the GIMP it was started for"


def test_missing_pyzmq_says_which_package_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "dfimat_client" or m.startswith("dfimat_client.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "zmq", None)  # makes "import zmq" fail like on a Python without pyzmq
    with pytest.raises(link.UserError, match="python3-zmq"):
        link.Link(timeout=0.5)
