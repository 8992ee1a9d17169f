"""The wire format in dfimat_client.protocol: framing, versions, limits, crops."""

from __future__ import annotations

import json

import pytest

from dfimat_client import protocol as P


def test_request_round_trip_keeps_buffers_and_fields():
    rid, frames = P.encode_request("predict", {"session": "s"}, [b"\x01\x02"], token="tok")
    req = P.decode_request(frames)
    assert (req.id, req.method, req.token, req.args, req.version) == (rid, "predict", "tok", {"session": "s"}, 1)
    assert [bytes(b) for b in req.buffers] == [b"\x01\x02"]
    assert req.stream is True


@pytest.mark.parametrize("header, code", [
    (b"{not json", P.E_BAD_REQUEST),
    (b"\xff\xfe", P.E_BAD_REQUEST),
    (b"[1, 2]", P.E_BAD_REQUEST),
    (json.dumps({"v": "1", "id": "a", "token": "t", "method": "hello"}).encode(), P.E_BAD_REQUEST),
    (json.dumps({"v": 99, "id": "a", "token": "t", "method": "hello"}).encode(), P.E_PROTOCOL_VERSION),
    (json.dumps({"v": 1, "id": "", "token": "t", "method": "hello"}).encode(), P.E_BAD_REQUEST),
    (json.dumps({"v": 1, "id": "a", "method": "hello"}).encode(), P.E_AUTH),
    (json.dumps({"v": 1, "id": "a", "token": "t", "method": 3}).encode(), P.E_BAD_REQUEST),
    (json.dumps({"v": 1, "id": "a", "token": "t", "method": "x", "args": []}).encode(), P.E_BAD_REQUEST),
    (json.dumps({"v": 1, "id": "a", "token": "t", "method": "x", "nbuf": 2}).encode(), P.E_BAD_REQUEST),
    (json.dumps({"v": 1, "id": "a", "token": "t", "method": "x", "stream": "yes"}).encode(), P.E_BAD_REQUEST),
    (b'{"v": 1, "id": "a", "token": "t", "method": "predict", "args": {"x": NaN}}', P.E_BAD_REQUEST),
    (b'{"v": 1, "id": "a", "token": "t", "method": "predict", "args": {"x": Infinity}}', P.E_BAD_REQUEST),
])
def test_malformed_headers_raise_precise_codes(header, code):
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request([header])
    assert info.value.code == code


def test_error_keeps_the_request_id_when_the_header_named_one():
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request([json.dumps({"v": 7, "id": "abc", "token": "t", "method": "hello"}).encode()])
    assert info.value.request_id == "abc"


def test_oversized_header_and_too_many_buffers_are_refused():
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request([b" " * (P.MAX_HEADER_BYTES + 1)])
    assert info.value.code == P.E_TOO_LARGE
    _, frames = P.encode_request("x", {}, [b""] * (P.MAX_BUFFERS + 1), token="t")
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request(frames)
    assert info.value.code == P.E_TOO_LARGE


def test_empty_message_is_bad_request():
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request([])
    assert info.value.code == P.E_BAD_REQUEST


def test_image_geometry_limits():
    assert P.check_image_geometry(4, 3, 4) == 48
    for w, h, c, code in [(0, 3, 3, P.E_BAD_REQUEST), (3, -1, 3, P.E_BAD_REQUEST), (3, 3, 2, P.E_BAD_IMAGE),
                          (3, 3, True, P.E_BAD_IMAGE), (2.5, 3, 3, P.E_BAD_REQUEST),
                          (100_000, 100_000, 3, P.E_TOO_LARGE)]:
        with pytest.raises(P.ProtocolError) as info:
            P.check_image_geometry(w, h, c)
        assert info.value.code == code, (w, h, c)
    with pytest.raises(P.ProtocolError):
        P.check_image_geometry(100, 100, 3, max_pixels=9_999)


def test_content_hash_depends_on_geometry():
    data = bytes(range(24))
    assert P.content_hash(data, 4, 2, 3) != P.content_hash(data, 2, 4, 3)
    assert P.content_hash(data, 4, 2, 3) == P.content_hash(bytearray(data), 4, 2, 3)


def test_expand_crop_places_rows_at_the_offset():
    crop = bytes([1, 2, 3, 4, 5, 6])  # 3 wide, 2 high
    full = P.expand_crop(crop, 1, 2, 3, 2, 5, 4)
    rows = [list(full[r * 5:(r + 1) * 5]) for r in range(4)]
    assert rows == [[0] * 5, [0] * 5, [0, 1, 2, 3, 0], [0, 4, 5, 6, 0]]
    with pytest.raises(P.ProtocolError):
        P.expand_crop(crop, 3, 2, 3, 2, 5, 4)
    with pytest.raises(P.ProtocolError):
        P.expand_crop(crop[:-1], 1, 2, 3, 2, 5, 4)


def test_reply_decoding_checks_kind_and_buffer_count():
    frames = P.encode_reply("r", {"a": 1}, [b"xy"])
    reply = P.decode_reply(frames)
    assert (reply.id, reply.kind, reply.result, [bytes(b) for b in reply.buffers]) == ("r", "reply", {"a": 1}, [b"xy"])
    with pytest.raises(P.ProtocolError):
        P.decode_reply(frames[:1])
    err = P.decode_reply(P.encode_error("r", P.E_AUTH, "no"))
    assert err.error == {"code": "auth", "message": "no"}
    with pytest.raises(P.ProtocolError):
        P.decode_reply([b'{"kind": "nonsense"}'])


def test_dumps_refuses_nan():
    with pytest.raises(ValueError):
        P.dumps({"x": float("nan")})
