"""The service under hostile and odd input: every malformed message gets an error reply and the server keeps
serving. Runs the real engine on a tiny random checkpoint (plumbing only)."""

from __future__ import annotations

import json
import random
import time

import pytest
import zmq

from backend.server import EndpointError, Server, check_endpoint, is_loopback_endpoint
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


def test_wrong_token_gets_auth_error_and_no_work(peer, server):  # noqa: F811
    before = len(server.sessions)
    reply = peer.call("open_image", {"width": W, "height": H, "channels": 3}, [rgb_image(W, H)], token="nope")
    assert_error(reply, P.E_AUTH)
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


def test_fuzzed_messages_never_stop_the_server(peer):
    """Thousands of random, truncated and mutated messages; each gets an answer, then normal work goes on."""
    rng = random.Random(1234)
    sid = open_session(peer)
    good_header = json.dumps({"v": 1, "id": "f", "token": TOKEN, "method": "predict",
                              "args": {"session": sid, "prompts": {"box": [1, 1, 9, 9]}}}).encode()
    values = [None, True, -1, 0, 3, 2**63, 1e308, "x", "", [], {}, [1, 2], {"a": None}, "NaN", -0.5]
    keys = ["v", "id", "token", "method", "args", "nbuf", "stream", "width", "height", "channels", "session",
            "prompts", "box", "clicks", "scribbles", "text", "stroke_masks", "items", "hash", "key", "crop"]
    methods = list(P.METHODS) + ["", "nope"]

    def random_value(depth: int = 0):
        if depth < 2 and rng.random() < 0.3:
            return {rng.choice(keys): random_value(depth + 1) for _ in range(rng.randint(0, 4))}
        if depth < 2 and rng.random() < 0.2:
            return [random_value(depth + 1) for _ in range(rng.randint(0, 4))]
        return rng.choice(values)

    def message(i: int) -> list[bytes]:
        kind = rng.randrange(6)
        if kind == 0:  # raw garbage
            return [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 3))]
        if kind == 1:  # truncated good header
            return [good_header[:rng.randint(0, len(good_header) - 1)]]
        if kind == 2:  # one byte flipped
            b = bytearray(good_header)
            b[rng.randrange(len(b))] = rng.randrange(256)
            return [bytes(b)]
        header = {"v": 1, "id": f"fz{i}", "token": TOKEN, "method": rng.choice(methods),
                  "args": {rng.choice(keys): random_value() for _ in range(rng.randint(0, 5))}}
        if kind == 3:
            header[rng.choice(keys)] = random_value()
        bufs = [rng.randbytes(rng.choice([0, 1, 7, 16, W * H * 3])) for _ in range(rng.randint(0, 2))]
        header["nbuf"] = len(bufs) if kind != 4 else len(bufs) + 1
        if rng.random() < 0.3 and isinstance(header["args"], dict):
            header["args"]["session"] = sid
        return [json.dumps(header).encode(), *bufs]

    n = 2000
    internal = []
    for i in range(n):
        msg = message(i)
        peer.send(msg)
        reply = peer.final(10)
        assert reply.kind in ("reply", "error")
        if reply.kind == "error" and reply.error["code"] == P.E_INTERNAL:
            internal.append((msg[0][:200], reply.error["message"]))
    # Every bad input is caught by validation, not by the last-resort handler.
    assert internal == []
    assert peer.call("hello").kind == "reply"
    ok = peer.call("predict", {"session": open_session(peer), "prompts": {"box": [2, 2, 30, 30]}})
    assert ok.kind == "reply", ok.error


def test_oversized_frames_are_dropped_before_python_sees_them(engine):  # noqa: F811
    with running_server(engine, max_pixels=1000) as srv:
        big = RawPeer(srv.bound_endpoint)
        try:
            _, frames = P.encode_request("open_image", {"width": 2000, "height": 1000, "channels": 3},
                                         [bytes(6_000_000)], token=TOKEN)
            big.send(frames)
            assert not big.sock.poll(500)  # ZeroMQ dropped that peer; nothing was allocated for it
        finally:
            big.close()
        peer = RawPeer(srv.bound_endpoint)
        try:
            assert peer.call("hello").result["limits"]["max_pixels"] == 1000
            small = peer.call("open_image", {"width": 50, "height": 30, "channels": 3}, [bytes(4500)])
            assert_error(small, P.E_TOO_LARGE)
            assert "1000 pixels" in small.error["message"]
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

    from backend.server import alpha_to_uint8, crop_box, encode_alpha

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
