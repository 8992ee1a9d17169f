"""The service under hostile and odd input: every malformed message gets an error reply and the server keeps
serving. Runs the real engine on a tiny random checkpoint (plumbing only)."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from backend.serving.server import (
    MAX_FRAME_BYTES,
    EndpointError,
    Server,
    check_endpoint,
    is_loopback_endpoint,
)
from dfimat_client import protocol as P
from tests.test_server_fixtures import TOKEN, RawPeer, engine, rgb_image, running_server, server  # noqa: F401

W, H = 48, 40


@pytest.fixture
def peer(server):  # noqa: F811
    p = RawPeer(server.bound_endpoint)
    yield p
    p.close()


def open_session(peer: RawPeer, key: str | None = None) -> str:
    args = {"width": W, "height": H, "channels": 3}
    if key:
        args["key"] = key
    reply = peer.call("open_image", args, [rgb_image(W, H)])
    assert reply.kind == "reply", reply.error
    return reply.result["session"]


def assert_error(reply: P.Reply, code: str) -> None:
    assert reply.kind == "error", reply.result
    assert reply.error["code"] == code, reply.error
    assert reply.error["message"]


def test_hello_reports_versions_limits_and_capabilities(peer):
    reply = peer.call("hello")
    r = reply.result
    assert r["protocol"] == P.PROTOCOL_VERSION and P.PROTOCOL_VERSION in r["versions"]
    assert {"open_image", "predict", "batch", "cancel", "stroke_masks"} <= set(r["capabilities"])
    assert r["limits"]["max_pixels"] == P.MAX_PIXELS
    assert r["device"] == "cpu" and r["model"]


def test_predict_returns_a_cropped_uint8_alpha(peer):
    sid = open_session(peer)
    reply = peer.call("predict", {"session": sid, "prompts": {"box": [5, 5, 30, 30]}})
    r = reply.result
    assert (r["width"], r["height"]) == (W, H)
    assert len(reply.buffers[0]) == r["w"] * r["h"]
    assert 0 <= r["x"] and r["x"] + r["w"] <= W and 0 <= r["y"] and r["y"] + r["h"] <= H
    full = peer.call("predict", {"session": sid, "prompts": {"clicks": [[10, 10, True]]}, "crop": False})
    assert (full.result["w"], full.result["h"]) == (W, H) and len(full.buffers[0]) == W * H
    # Each reply names the engine's rules that shaped it: a box bounds its matte, marks hold.
    assert "box_support" in r["rules"] and "keep_marks" in full.result["rules"]


def test_wrong_token_gets_auth_error_and_no_work(peer, server):  # noqa: F811
    before = len(server.sessions)
    reply = peer.call("open_image", {"width": W, "height": H, "channels": 3}, [rgb_image(W, H)], token="nope")
    assert_error(reply, P.E_AUTH)
    assert len(server.sessions) == before


def test_a_request_without_a_token_gets_auth_error_and_no_work(peer, server):  # noqa: F811
    before = len(server.sessions)
    header = {"v": 1, "id": "no-token", "method": "open_image", "nbuf": 1,
              "args": {"width": W, "height": H, "channels": 3}}
    peer.send([json.dumps(header).encode(), rgb_image(W, H)])
    reply = peer.final()
    assert_error(reply, P.E_AUTH)
    assert reply.id == "no-token"
    assert len(server.sessions) == before


def test_wrong_protocol_version_is_named(peer):
    reply = peer.call("hello", version=2)
    assert_error(reply, P.E_PROTOCOL_VERSION)
    assert reply.id is not None


@pytest.mark.parametrize("frames, code", [
    ([b"{bad json"], P.E_BAD_REQUEST),
    ([b""], P.E_BAD_REQUEST),
    ([json.dumps({"v": 1, "id": "x", "token": TOKEN, "method": "hello", "nbuf": 3}).encode()], P.E_BAD_REQUEST),
    ([json.dumps({"v": 1, "id": "x", "token": TOKEN, "method": "explode"}).encode()], P.E_UNKNOWN_METHOD),
    ([b'{"v":1,"id":"x","token":"' + TOKEN.encode() + b'","method":"predict","args":{"session":"a",'
      b'"prompts":{"clicks":[[NaN,1,true]]}}}'], P.E_BAD_REQUEST),
])
def test_malformed_frames_get_error_replies(peer, frames, code):
    peer.send(frames)
    assert_error(peer.final(), code)
    assert peer.call("hello").kind == "reply"


@pytest.mark.parametrize("args, nbuf, code", [
    ({"width": 100_000, "height": 100_000, "channels": 3}, 1, P.E_TOO_LARGE),
    ({"width": W, "height": H, "channels": 3}, 0, P.E_BAD_REQUEST),  # neither pixels nor hash
    ({"width": W, "height": H, "channels": 2}, 1, P.E_BAD_IMAGE),
    ({"width": "48", "height": H, "channels": 3}, 1, P.E_BAD_REQUEST),
    ({"width": W + 1, "height": H, "channels": 3}, 1, P.E_BAD_IMAGE),  # pixels do not match the size
    ({"width": W, "height": H, "channels": 3, "hash": "00" * 32}, 1, P.E_HASH_MISMATCH),
    ({"width": W, "height": H, "channels": 3, "hash": "00" * 32, "key": "k"}, 0, P.E_UNKNOWN_IMAGE),
    ({"width": W, "height": H, "channels": 3, "key": 5}, 1, P.E_BAD_REQUEST),
])
def test_bad_open_image_arguments(peer, args, nbuf, code):
    assert_error(peer.call("open_image", args, [rgb_image(W, H)] * nbuf), code)


def test_bad_predict_arguments(peer):
    sid = open_session(peer)
    cases = [
        ({"session": "nope", "prompts": {"box": [1, 1, 5, 5]}}, [], P.E_UNKNOWN_SESSION),
        ({"session": 3, "prompts": {"box": [1, 1, 5, 5]}}, [], P.E_UNKNOWN_SESSION),
        ({"session": sid, "prompts": "box"}, [], P.E_BAD_PROMPT),
        ({"session": sid, "prompts": {}}, [], P.E_BAD_PROMPT),
        ({"session": sid, "prompts": {"box": [1, 1, 5000, 5]}}, [], P.E_BAD_PROMPT),
        ({"session": sid, "prompts": {"clicks": [["a", 1, True]]}}, [], P.E_BAD_PROMPT),
        ({"session": sid, "prompts": {"stroke_masks": [{"width": 4, "height": 4}]}}, [], P.E_BAD_REQUEST),
        ({"session": sid, "prompts": {"stroke_masks": [{"width": 4, "height": 4}]}}, [b"\0" * 15], P.E_BAD_PROMPT),
        ({"session": sid, "prompts": {"stroke_masks": [{"width": 4000, "height": 4}]}}, [b"\0" * 16],
         P.E_BAD_REQUEST),
    ]
    for args, bufs, code in cases:
        assert_error(peer.call("predict", args, bufs), code)
    assert peer.call("predict", {"session": sid, "prompts": {"box": [1, 1, 20, 20]}}).kind == "reply"


def test_stroke_masks_become_prompts(peer, server):  # noqa: F811
    sid = open_session(peer)
    mask = bytearray(30 * 8)
    for r in range(2, 6):
        for c in range(2, 28):
            mask[r * 30 + c] = 255
    reply = peer.call("predict", {"session": sid, "prompts": {"stroke_masks": [
        {"positive": True, "x": 10, "y": 20, "width": 30, "height": 8}]}}, [bytes(mask)])
    assert reply.kind == "reply", reply.error


def test_reset_and_close(peer):
    sid = open_session(peer)
    assert peer.call("reset", {"session": sid}).result == {"session": sid}
    assert peer.call("close", {"session": sid}).result == {"closed": True}
    assert_error(peer.call("predict", {"session": sid, "prompts": {"box": [1, 1, 5, 5]}}), P.E_UNKNOWN_SESSION)


def test_same_key_and_pixels_continue_the_session(peer):
    a = open_session(peer, key="gimp:1:2")
    h = P.content_hash(rgb_image(W, H), W, H, 3)
    reply = peer.call("open_image", {"width": W, "height": H, "channels": 3, "hash": h, "key": "gimp:1:2"})
    assert reply.result["session"] == a and reply.result["cached"] is True
    other = peer.call("open_image", {"width": W, "height": H, "channels": 3, "key": "gimp:1:3"}, [rgb_image(W, H)])
    assert other.result["session"] != a


def test_a_held_image_opens_by_hash_alone(peer, server):  # noqa: F811
    """Pixels sent once (with a key or hash) start further sessions from their hash alone, keyed or not."""
    img = rgb_image(W, H, seed=7)
    h = P.content_hash(img, W, H, 3)
    geometry = {"width": W, "height": H, "channels": 3}
    assert_error(peer.call("open_image", {**geometry, "hash": h}), P.E_UNKNOWN_IMAGE)
    first = peer.call("open_image", {**geometry, "key": "krita:doc:a"}, [img]).result["session"]
    peer.call("predict", {"session": first, "prompts": {"box": [2, 2, 30, 30]}})
    keyless = peer.call("open_image", {**geometry, "hash": h})
    assert keyless.kind == "reply", keyless.error
    assert keyless.result["session"] != first and keyless.result["cached"] is False
    other_key = peer.call("open_image", {**geometry, "hash": h, "key": "krita:doc:b"}).result
    assert other_key["session"] not in (first, keyless.result["session"]) and other_key["cached"] is False
    same_key = peer.call("open_image", {**geometry, "hash": h, "key": "krita:doc:a"}).result
    assert same_key == {"session": first, "cached": True, "width": W, "height": H}  # rounds kept
    # A session opened by hash is a real one: it answers like one opened from the pixels, from fresh rounds.
    prompts = {"session": keyless.result["session"], "prompts": {"clicks": [[20, 20, True]]}, "crop": False}
    fresh = peer.call("open_image", geometry, [img]).result["session"]
    by_hash = peer.call("predict", prompts)
    by_pixels = peer.call("predict", {**prompts, "session": fresh})
    assert bytes(by_hash.buffers[0]) == bytes(by_pixels.buffers[0])
    for sid in (first, keyless.result["session"], other_key["session"], fresh):
        peer.call("close", {"session": sid})
    assert_error(peer.call("open_image", {**geometry, "hash": h}), P.E_UNKNOWN_IMAGE)  # nothing holds it now


def test_keyless_pixels_without_hash_are_not_hashed(peer, server, monkeypatch):  # noqa: F811
    hashed = []
    original = P.content_hash
    monkeypatch.setattr(P, "content_hash", lambda *a: hashed.append(a[1:]) or original(*a))
    img = rgb_image(W, H, seed=8)
    sid = peer.call("open_image", {"width": W, "height": H, "channels": 3}, [img]).result["session"]
    assert hashed == []
    assert_error(peer.call("open_image", {"width": W, "height": H, "channels": 3,
                                          "hash": original(img, W, H, 3)}), P.E_UNKNOWN_IMAGE)
    peer.call("open_image", {"width": W, "height": H, "channels": 3, "key": "k"}, [img])
    assert hashed == [(W, H, 3)]
    peer.call("close", {"session": sid})


def test_a_retried_request_id_runs_once(peer, server):  # noqa: F811
    before = server.sessions.engine  # the same engine object is used throughout
    rid, frames = P.encode_request("open_image", {"width": W, "height": H, "channels": 3}, [rgb_image(W, H)],
                                   token=TOKEN)
    peer.send(frames)
    first = peer.final()
    peer.send(frames)
    second = peer.final()
    assert first.result["session"] == second.result["session"]
    assert server.sessions.engine is before


def test_req_socket_clients_are_served_too(server):  # noqa: F811
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.bound_endpoint)
    try:
        _, frames = P.encode_request("hello", {}, token=TOKEN, stream=False)
        sock.send_multipart(frames)
        assert sock.poll(5000)
        assert P.decode_reply(sock.recv_multipart()).kind == "reply"
    finally:
        sock.close(linger=0)


def test_batch_gives_one_matte_per_item_and_cancel_stops_it(peer):
    img = rgb_image(W, H)
    items = [{"width": W, "height": H, "channels": 3, "buffer": 0, "prompts": {"box": [2, 2, 20 + i, 30]}}
             for i in range(3)]
    reply = peer.call("batch", {"items": items}, [img])
    assert reply.kind == "reply", reply.error
    assert [len(r["masks"]) for r in reply.result["results"]] == [1, 1, 1]
    assert reply.result["cancelled"] is False
    assert len(reply.buffers) == 3
    assert_error(peer.call("batch", {"items": items + [{"width": W, "height": H, "channels": 3, "buffer": 5}]},
                           [img]), P.E_BAD_REQUEST)
    assert_error(peer.call("batch", {"items": []}), P.E_BAD_REQUEST)
    assert_error(peer.call("cancel", {}), P.E_BAD_REQUEST)
    assert peer.call("cancel", {"request": "not-running"}).result["cancelled"] is False


def test_cancel_a_queued_batch(engine):  # noqa: F811
    with running_server(engine) as srv:
        peer = RawPeer(srv.bound_endpoint)
        try:
            img = rgb_image(W, H)
            items = [{"width": W, "height": H, "channels": 3, "buffer": 0, "prompts": {"box": [2, 2, 20, 30]}}] * 40
            ids = []
            for _ in range(3):
                rid, frames = P.encode_request("batch", {"items": items}, [img], token=TOKEN)
                peer.send(frames)
                ids.append(rid)
            _, frames = P.encode_request("cancel", {"request": ids[-1]}, token=TOKEN)
            peer.send(frames)
            finals = {}
            deadline = time.monotonic() + 60
            while len(finals) < 4 and time.monotonic() < deadline:
                r = peer.final(60)
                finals[r.id] = r
            last = finals[ids[-1]]
            assert (last.kind == "error" and last.error["code"] == P.E_CANCELLED) or last.result["cancelled"]
            assert finals[ids[0]].kind == "reply"
        finally:
            peer.close()


def test_images_above_the_configured_limit_get_too_large_not_silence(engine):  # noqa: F811
    """--max-pixels limits images, not frames: a bigger image must be answered, not met with silence."""
    with running_server(engine, max_pixels=1000) as srv:
        assert srv._router.getsockopt(zmq.MAXMSGSIZE) == MAX_FRAME_BYTES >= P.MAX_PIXELS * 4
        peer = RawPeer(srv.bound_endpoint)
        try:
            assert peer.call("hello").result["limits"]["max_pixels"] == 1000
            big = peer.call("open_image", {"width": 2000, "height": 1000, "channels": 3}, [bytes(6_000_000)])
            assert_error(big, P.E_TOO_LARGE)
            assert "1000 pixels" in big.error["message"]
            small = peer.call("open_image", {"width": 50, "height": 30, "channels": 3}, [bytes(4500)])
            assert_error(small, P.E_TOO_LARGE)
            assert peer.call("open_image", {"width": 20, "height": 20, "channels": 3}, [bytes(1200)]).kind == "reply"
        finally:
            peer.close()


@pytest.mark.parametrize("endpoint, ok", [
    ("tcp://127.0.0.1:5599", True), ("tcp://localhost:5599", True), ("tcp://[::1]:5599", True),
    ("ipc:///tmp/x.sock", True), ("tcp://0.0.0.0:5599", False), ("tcp://*:5599", False),
    ("tcp://192.168.1.4:5599", False), ("tcp://eth0:5599", False), ("udp://127.0.0.1:1", False),
])
def test_only_loopback_endpoints_without_allow_remote(endpoint, ok):
    assert is_loopback_endpoint(endpoint) is ok
    if ok:
        check_endpoint(endpoint)
    else:
        with pytest.raises(EndpointError):
            check_endpoint(endpoint)
        check_endpoint(endpoint, allow_remote=True) if endpoint.startswith("tcp") else None


def test_server_refuses_a_non_loopback_bind(engine):  # noqa: F811
    with pytest.raises(EndpointError):
        Server(engine, endpoint="tcp://0.0.0.0:5599", token=TOKEN)


def test_ipc_endpoint_is_private_and_removed_on_stop(engine, tmp_path):  # noqa: F811
    path = tmp_path / "run" / "b.sock"
    with running_server(engine, endpoint=f"ipc://{path}") as srv:
        assert (path.stat().st_mode & 0o777) == 0o600
        peer = RawPeer(srv.bound_endpoint)
        assert peer.call("hello").kind == "reply"
        peer.close()
        with pytest.raises(EndpointError):
            Server(engine, endpoint=f"ipc://{path}", token=TOKEN).bind()
    assert not path.exists()


def test_alpha_encoding_rounds_clips_and_crops():
    import numpy as np

    from backend.serving.server import alpha_to_uint8, crop_box, encode_alpha

    a = np.zeros((6, 8), np.float32)
    a[2:4, 3:7] = [[0.5, 1.0, 1.5, np.nan], [-1.0, 0.2, 1.0, 1.0]]
    a8 = alpha_to_uint8(a)
    assert a8[2, 3:7].tolist() == [128, 255, 255, 0] and a8[3, 3:7].tolist() == [0, 51, 255, 255]
    assert crop_box(a8) == (3, 2, 4, 2)
    assert crop_box(np.zeros((3, 3), np.uint8)) == (0, 0, 0, 0)
    meta, bufs = encode_alpha(a, 8, 6)
    assert (meta["x"], meta["y"], meta["w"], meta["h"]) == (3, 2, 4, 2) and len(bufs[0]) == 8
    meta, bufs = encode_alpha(np.zeros((6, 8), np.float32), 8, 6)
    assert (meta["w"], meta["h"], bufs) == (0, 0, [b""])
    with pytest.raises(P.ProtocolError):
        encode_alpha(a, 6, 8)


def test_hello_and_cancel_answer_while_the_model_is_busy(server):  # noqa: F811
    busy, other = RawPeer(server.bound_endpoint), RawPeer(server.bound_endpoint)
    try:
        img = rgb_image(W, H)
        items = [{"width": W, "height": H, "channels": 3, "buffer": 0, "prompts": {"box": [2, 2, 20, 30]}}] * 100
        rid, frames = P.encode_request("batch", {"items": items}, [img], token=TOKEN)
        busy.send(frames)
        deadline = time.monotonic() + 30
        while True:  # wait until the worker is inside the batch
            assert busy.sock.poll(int((deadline - time.monotonic()) * 1000))
            msg = P.decode_reply(busy.sock.recv_multipart())
            if msg.kind == "progress" and msg.progress.get("done") is not None:
                break
        start = time.monotonic()
        assert other.call("hello").kind == "reply"
        assert other.call("cancel", {"request": rid}).result == {"cancelled": True, "running": True}
        assert time.monotonic() - start < 1.0
        final = busy.final(30)
        assert final.result["cancelled"] is True and len(final.result["results"]) < 100
    finally:
        busy.close()
        other.close()
