"""dfimat_client against the real service (tiny random engine): API, lazy pirate, errors, concurrency."""

from __future__ import annotations

import functools
import json
import threading
import time

import pytest
import zmq

from dfimat_client import (
    AuthError,
    BackendError,
    BackendNotRunning,
    Client,
    ConfigError,
    ProtocolVersionError,
    load_config,
)
from dfimat_client import client as client_mod
from dfimat_client import protocol as P
from dfimat_client.config import read_token, write_token
from tests.test_server_fixtures import (  # noqa: F401
    TOKEN,
    engine,
    free_tcp_endpoint,
    rgb_image,
    running_server,
    server,
)

W, H = 48, 40


@pytest.fixture
def client(server):  # noqa: F811
    c = Client(server.bound_endpoint, TOKEN, timeout=5)
    yield c
    c.disconnect()


def test_predict_returns_the_whole_image_alpha(client, server):  # noqa: F811
    sid = client.open_image(rgb_image(W, H), W, H, 3)
    alpha, w, h = client.predict(sid, {"box": [4, 6, 30, 33], "clicks": [[15, 20, True]]})
    assert (w, h) == (W, H) and isinstance(alpha, bytes) and len(alpha) == W * H
    # Same image, same round in a fresh session, uncropped on the wire: the client's expansion must match.
    from tests.test_server_fixtures import RawPeer

    peer = RawPeer(server.bound_endpoint)
    try:
        other = peer.call("open_image", {"width": W, "height": H, "channels": 3}, [rgb_image(W, H)]).result["session"]
        full = peer.call("predict", {"session": other, "prompts": {"box": [4, 6, 30, 33],
                                                                    "clicks": [[15, 20, True]]}, "crop": False})
        assert bytes(full.buffers[0]) == alpha
    finally:
        peer.close()


def test_rgba_and_gray_images_are_accepted(client):
    rgba = bytes(W * H * 4)
    gray = bytes(range(256)) * (W * H // 256) + bytes(W * H % 256)
    for pixels, c in ((rgba, 4), (gray, 1)):
        sid = client.open_image(pixels, W, H, c)
        alpha, w, h = client.predict(sid, {"box": [1, 1, 20, 20]})
        assert len(alpha) == w * h == W * H
        client.reset(sid)
        client.close(sid)


def test_a_24_megapixel_image_works(client):
    w, h = 6000, 4000
    row = bytes(w * 3)
    pixels = row * 1000 + (bytes(2000 * 3) + bytes([200]) * (2000 * 3) + bytes(2000 * 3)) * 2000 + row * 1000
    sid = client.open_image(pixels, w, h, 3, key="big")
    alpha, aw, ah = client.predict(sid, {"box": [1800, 900, 4200, 3100]})
    assert (aw, ah) == (w, h) and len(alpha) == w * h
    client.close(sid)


def test_client_refuses_bad_images_before_sending(client):
    with pytest.raises(BackendError) as info:
        client.open_image(b"", 200_000, 200_000, 3)
    assert info.value.code == P.E_TOO_LARGE
    with pytest.raises(BackendError) as info:
        client.open_image(bytes(10), W, H, 3)
    assert info.value.code == P.E_BAD_IMAGE


def record_requests(monkeypatch) -> list[tuple[str, int]]:
    """(method, number of binary frames) of every request any Client starts from now on."""
    sent: list[tuple[str, int]] = []
    original = client_mod.Client._start

    def spy(self, req, progress):
        sent.append((req.method, len(req.buffers)))
        return original(self, req, progress)

    monkeypatch.setattr(client_mod.Client, "_start", spy)
    return sent


def test_reopening_by_key_sends_no_pixels(client, server, monkeypatch):  # noqa: F811
    sid = client.open_image(rgb_image(W, H), W, H, 3, key="gimp:1:1")
    client.predict(sid, {"box": [1, 1, 30, 30]})
    sent = record_requests(monkeypatch)
    again = Client(server.bound_endpoint, TOKEN, timeout=5)  # a new GIMP plug-in process
    try:
        assert again.open_image(rgb_image(W, H), W, H, 3, key="gimp:1:1") == sid
    finally:
        again.disconnect()
    assert sent == [("open_image", 0)]


def test_same_pixels_under_another_key_are_not_sent_again(client, server, monkeypatch):  # noqa: F811
    """A duplicated layer (same pixels, new key) opens by hash: a new session on the image the backend has."""
    first = client.open_image(rgb_image(W, H, seed=4), W, H, 3, key="gimp:1:1")
    sent = record_requests(monkeypatch)
    second = client.open_image(rgb_image(W, H, seed=4), W, H, 3, key="gimp:1:2")
    assert second != first and sent == [("open_image", 0)]
    alpha, w, h = client.predict(second, {"box": [2, 2, 30, 30]})
    assert len(alpha) == w * h == W * H


def test_keyless_open_sends_no_hash(client, monkeypatch):
    monkeypatch.setattr(P, "content_hash", lambda *a: pytest.fail("a keyless open must not hash the pixels"))
    sid = client.open_image(rgb_image(W, H), W, H, 3)
    assert len(client.predict(sid, {"box": [2, 2, 30, 30]})[0]) == W * H


def test_an_image_above_the_backends_limit_is_too_large_not_not_running(engine):  # noqa: F811
    w, h = 2000, 1000
    with running_server(engine, max_pixels=1_000_000) as srv, \
            Client(srv.bound_endpoint, TOKEN, timeout=2.0, retries=1) as c:
        start = time.monotonic()
        with pytest.raises(BackendError) as info:
            c.open_image(bytes(w * h * 3), w, h, 3)  # refused from the limit hello announced, nothing sent
        assert info.value.code == P.E_TOO_LARGE and "1000000 pixels" in info.value.message
        assert c.server_info["limits"]["max_pixels"] == 1_000_000
        # A client that believes in a higher limit sends the pixels: the backend answers too_large, it does
        # not drop the connection (which would read as "backend not running" after the timeout).
        c.server_info = {**c.server_info, "limits": {"max_pixels": P.MAX_PIXELS}}
        with pytest.raises(BackendError) as info:
            c.open_image(bytes(w * h * 3), w, h, 3)
        assert info.value.code == P.E_TOO_LARGE and not isinstance(info.value, BackendNotRunning)
        with pytest.raises(BackendError) as info:
            c.batch([{"pixels": bytes(w * h), "width": w, "height": h, "channels": 1,
                      "prompts": {"box": [1, 1, 9, 9]}}])
        assert info.value.code == P.E_TOO_LARGE
        assert time.monotonic() - start < 2.0  # answered, not timed out (that would take 2 × 2 s)
        sid = c.open_image(bytes(1000 * 1000 * 3), 1000, 1000, 3)  # exactly at the limit
        c.close(sid)


def test_evicted_session_is_reopened_transparently(engine):  # noqa: F811
    with running_server(engine, max_sessions=1) as srv:
        c = Client(srv.bound_endpoint, TOKEN, timeout=5)
        ref = Client(srv.bound_endpoint, TOKEN, timeout=5)
        try:
            a = c.open_image(rgb_image(W, H, seed=1), W, H, 3)
            c.predict(a, {"box": [2, 2, 30, 30]})
            b = c.open_image(rgb_image(W, H, seed=2), W, H, 3)  # evicts a
            c.predict(b, {"box": [2, 2, 30, 30]})
            alpha, _, _ = c.predict(a, {"clicks": [[10, 10, True]]})
            # Reference: the same two rounds on a fresh session give the same matte.
            r = ref.open_image(rgb_image(W, H, seed=1), W, H, 3)
            ref.predict(r, {"box": [2, 2, 30, 30]})
            expected, _, _ = ref.predict(r, {"clicks": [[10, 10, True]]})
            assert alpha == expected
        finally:
            c.disconnect()
            ref.disconnect()


def test_wrong_token_raises_auth_error(server):  # noqa: F811
    with Client(server.bound_endpoint, "wrong", timeout=5) as c, pytest.raises(AuthError):
        c.hello()


def test_other_protocol_version_raises(server, monkeypatch):  # noqa: F811
    monkeypatch.setattr(P, "encode_request", functools.partial(P.encode_request, version=99))
    with Client(server.bound_endpoint, TOKEN, timeout=5) as c, pytest.raises(ProtocolVersionError):
        c.hello()


def test_no_backend_gives_backend_not_running_within_the_timeout():
    endpoint = free_tcp_endpoint()
    with Client(endpoint, TOKEN, timeout=0.3, retries=2) as c:
        start = time.monotonic()
        with pytest.raises(BackendNotRunning):
            c.hello()
        assert time.monotonic() - start < 0.3 * 3 + 1.0


def test_missing_ipc_socket_fails_at_once(tmp_path):
    with Client(f"ipc://{tmp_path / 'none.sock'}", TOKEN, timeout=30, retries=5) as c:
        start = time.monotonic()
        with pytest.raises(BackendNotRunning, match="no socket"):
            c.hello()
        assert time.monotonic() - start < 1.0


def test_hanging_server_times_out():
    """A peer that accepts requests and never answers must not hang the client."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        with Client(f"tcp://127.0.0.1:{port}", TOKEN, timeout=0.3, retries=1) as c:
            start = time.monotonic()
            with pytest.raises(BackendNotRunning):
                c.hello()
            assert time.monotonic() - start < 0.3 * 2 + 1.0
        assert router.poll(100)  # the request did arrive
    finally:
        router.close(linger=0)


def test_server_dying_mid_request_gives_an_error_not_a_hang():
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    with Client(f"tcp://127.0.0.1:{port}", TOKEN, timeout=0.5, retries=1) as c:
        call = c.submit("hello")
        assert router.poll(2000)
        frames = router.recv_multipart()
        rid = json.loads(frames[1])["id"]
        router.send_multipart([frames[0], *P.encode_progress(rid, {"state": "working"})])
        router.close(linger=0)  # the backend is gone
        start = time.monotonic()
        with pytest.raises(BackendNotRunning):
            call.result()
        assert time.monotonic() - start < 0.5 * 2 + 1.0


def test_lazy_pirate_reaches_a_backend_that_comes_up_late(engine):  # noqa: F811
    endpoint = free_tcp_endpoint()
    with Client(endpoint, TOKEN, timeout=0.4, retries=10) as c:
        call = c.submit("hello")
        time.sleep(1.0)
        assert not call.done()
        with running_server(engine, endpoint=endpoint):
            info = call.result(timeout=20)
            assert info["protocol"] == P.PROTOCOL_VERSION


def test_two_clients_at_once_get_independent_answers(server):  # noqa: F811
    prompts = [{"box": [2, 2, 40, 35]}, {"clicks": [[10, 30, True], [30, 10, False]]}]
    expected = []
    with Client(server.bound_endpoint, TOKEN, timeout=10) as c:
        for i, p in enumerate(prompts):
            sid = c.open_image(rgb_image(W, H, seed=10 + i), W, H, 3)
            expected.append(c.predict(sid, p))
    got: dict[int, object] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with Client(server.bound_endpoint, TOKEN, timeout=10) as c:
                for _ in range(5):
                    sid = c.open_image(rgb_image(W, H, seed=10 + i), W, H, 3)
                    result = c.predict(sid, prompts[i])
                    assert result == expected[i]
                    c.close(sid)
                got[i] = result
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert got == {0: expected[0], 1: expected[1]}


def test_non_blocking_calls_and_batch_progress(client):
    img = rgb_image(W, H)
    seen = []
    call = client.submit("batch", [{"pixels": img, "width": W, "height": H, "channels": 3,
                                    "prompts": {"box": [1, 1, 10 + i, 30]}} for i in range(4)],
                         progress=seen.append)
    deadline = time.monotonic() + 30
    while not call.done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    result = call.result()
    assert not result.cancelled
    assert [len(item["masks"]) for item in result.items] == [1, 1, 1, 1]
    assert all(len(m["alpha"]) == W * H for item in result.items for m in item["masks"])
    assert any(p.get("total") == 4 for p in seen)


def test_cancel_a_running_batch_from_the_client(client):
    img = rgb_image(W, H)
    items = [{"pixels": img, "width": W, "height": H, "channels": 3, "prompts": {"box": [1, 1, 30, 30]}}] * 200
    call = client.submit("batch", items)
    deadline = time.monotonic() + 30
    while call.last_progress is None or call.last_progress.get("done") is None:
        assert not call.done() and time.monotonic() < deadline
        time.sleep(0.005)
    call.cancel()
    result = call.result(timeout=30)
    assert result.cancelled and len(result.items) < 200
    assert client.hello()["protocol"] == P.PROTOCOL_VERSION  # still serving


def test_submit_rejects_unknown_methods(client):
    with pytest.raises(ValueError):
        client.submit("explode")


def test_stroke_masks_through_the_client(client):
    sid = client.open_image(rgb_image(W, H), W, H, 3)
    mask = bytes([0] * 4 + [255] * 22 + [0] * 4) * 6
    alpha, w, h = client.predict(sid, {"stroke_masks": [{"positive": True, "x": 8, "y": 10, "width": 30,
                                                         "height": 6, "mask": mask}]})
    assert len(alpha) == w * h
    with pytest.raises(ValueError):
        client.predict(sid, {"stroke_masks": [{"x": 0, "y": 0, "width": 3, "height": 3, "mask": b"12"}]})


def test_config_and_token_file(tmp_path, monkeypatch, server):  # noqa: F811
    token_file = write_token(tmp_path / "token", TOKEN)
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert read_token(token_file) == TOKEN
    cfg = tmp_path / "config.json"
    monkeypatch.setenv("DFIMAT_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="install"):
        load_config()
    cfg.write_text(json.dumps({"schema": 1, "endpoint": server.bound_endpoint, "token_file": str(token_file),
                               "backend_command": ["python", "-m", "backend", "serve"], "device": "cpu"}))
    config = load_config()
    assert config.endpoint == server.bound_endpoint and config.backend_command[-1] == "serve"
    with Client(timeout=5) as c:  # everything from the config
        assert c.hello()["protocol"] == P.PROTOCOL_VERSION
    cfg.write_text(json.dumps({"schema": 2}))
    with pytest.raises(ConfigError, match="schema"):
        load_config()
    cfg.write_text("{")
    with pytest.raises(ConfigError):
        load_config()


def test_client_package_needs_only_the_stdlib_and_pyzmq(tmp_path):
    """Vendored into the editors' Pythons: importing it must not pull numpy, torch or the backend."""
    import shutil
    import subprocess
    import sys

    from tests.test_server_fixtures import REPO

    vendor = tmp_path / "vendor"
    shutil.copytree(REPO / "dfimat_client", vendor / "dfimat_client")
    code = ("import sys; import dfimat_client, dfimat_client.launcher; "
            "bad = [m for m in ('numpy', 'torch', 'cv2', 'backend') if m in sys.modules]; "
            "assert not bad, bad; print(dfimat_client.PROTOCOL_VERSION)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(vendor), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(P.PROTOCOL_VERSION)
