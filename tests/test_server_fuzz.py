"""Hypothesis-driven fuzzing of the service: thousands of malformed messages of every kind go to one server;
each must get an error answer (never silence, never the last-resort ``internal``), and afterwards ``hello``
and a real ``predict`` still work. Runs the real engine on a tiny random checkpoint (plumbing only).

Every generated message is invalid by construction (a type-changing mutation, a wrong size, an unknown
name...), so "must be answered with an error" is exact, not a heuristic; ``derandomize`` makes runs
repeatable.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.serving.server import Server
from dfimat_client import protocol as P
from tests.test_server_fixtures import TOKEN, RawPeer, engine, rgb_image, running_server  # noqa: F401

W, H = 48, 40
EXAMPLES = 2000
ID_PLACEHOLDER = "@ID@"  # replaced by a unique id at send time, so no reply is served from the replay cache

Frames = list[bytes]
Accepts = Callable[[Any], bool]

# Strings include lone surrogates, often: JSON can carry them, Python's str.encode() cannot.
TEXT = st.one_of(st.text(st.characters(codec=None, exclude_categories=()), max_size=24),
                 st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3))
KEYS = ["v", "id", "token", "method", "args", "nbuf", "stream", "width", "height", "channels", "key", "hash",
        "session", "prompts", "box", "clicks", "scribbles", "text", "stroke_masks", "items", "buffer",
        "every_person", "crop", "request", "x", "y", "positive", "points"]
HUGE_INTS = st.one_of(st.integers(min_value=2**31, max_value=2**64),
                      st.integers(min_value=10**30, max_value=10**400),
                      st.integers(min_value=-(10**40), max_value=-1))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), HUGE_INTS,
                    st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON_TREES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | TEXT, inner,
                                                                         max_size=4), max_leaves=10)


# ---- what a valid value looks like, per field: a mutation draws anything these do NOT accept --------------

def is_int(v: Any) -> bool:
    return type(v) is int


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def is_list(v: Any) -> bool:
    return isinstance(v, list)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_flag(v: Any) -> bool:
    return isinstance(v, bool) or (type(v) is int and v in (0, 1))


def null_or_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def null_or_list(v: Any) -> bool:
    return v is None or isinstance(v, list)


def empty_or_list(v: Any) -> bool:
    return not v or isinstance(v, list)  # the engine reads a missing/empty click list as "no clicks"


HEADER_FIELDS: tuple[tuple[tuple, Accepts], ...] = (
    (("v",), is_int), (("id",), is_str), (("token",), is_str), (("method",), is_str), (("args",), is_dict),
    (("nbuf",), is_int), (("stream",), is_bool))


@dataclass(frozen=True)
class Template:
    """A valid request that is never sent as is; ``fields`` are the argument paths whose type is checked."""

    method: str
    args: dict
    buffers: tuple[bytes, ...] = ()
    fields: tuple[tuple[tuple, Accepts], ...] = ()
    bad_frame_deltas: tuple[int, ...] = ()  # adding/removing buffer frames (nbuf kept honest) that must fail

    def header(self, **changes: Any) -> dict:
        base = {"v": 1, "id": ID_PLACEHOLDER, "token": TOKEN, "method": self.method,
                "args": copy.deepcopy(self.args), "nbuf": len(self.buffers), "stream": True}
        return {**base, **changes}


def templates(sid: str) -> dict[str, Template]:
    img = rgb_image(W, H, seed=3)
    box = {"box": [2, 2, 30, 30]}
    stroke = {"positive": True, "x": 4, "y": 4, "width": 8, "height": 2}
    item = {"width": W, "height": H, "channels": 3, "buffer": 0, "prompts": box}
    open_fields = ((("width",), is_int), (("height",), is_int), (("channels",), is_int),
                   (("key",), null_or_str))
    predict_fields = (
        (("session",), is_str), (("prompts",), is_dict), (("prompts", "box"), null_or_list),
        (("prompts", "box", 1), is_number), (("prompts", "clicks"), empty_or_list),
        (("prompts", "clicks", 0), is_list), (("prompts", "clicks", 0, 0), is_number),
        (("prompts", "clicks", 0, 2), is_flag))
    masks = ("prompts", "stroke_masks")
    stroke_fields = ((masks, empty_or_list), ((*masks, 0), is_dict), ((*masks, 0, "width"), is_int),
                     ((*masks, 0, "x"), is_int), ((*masks, 0, "positive"), is_bool))
    batch_fields = ((("items",), is_list), (("items", 0), is_dict), (("items", 0, "width"), is_int),
                    (("items", 0, "channels"), is_int), (("items", 0, "buffer"), is_int),
                    (("items", 0, "every_person"), is_bool))
    session_fields = ((("session",), is_str),)
    return {
        "hello": Template("hello", {}),
        "open_image": Template("open_image", {"width": W, "height": H, "channels": 3, "key": "fuzz:layer"},
                               (img,), open_fields, bad_frame_deltas=(-1, 1)),
        "predict": Template("predict", {"session": sid, "prompts": {**box, "clicks": [[10, 10, True]]}},
                            fields=predict_fields),
        "strokes": Template("predict", {"session": sid, "prompts": {"stroke_masks": [stroke]}},
                            (b"\xff" * 16,), stroke_fields, bad_frame_deltas=(-1, 1)),
        "batch": Template("batch", {"items": [item]}, (img,), batch_fields, bad_frame_deltas=(-1,)),
        "reset": Template("reset", {"session": sid}, fields=session_fields),
        "close": Template("close", {"session": sid}, fields=session_fields),
        "cancel": Template("cancel", {"request": "nothing-running"}, fields=((("request",), is_str),)),
    }


def render(header: dict, buffers: tuple[bytes, ...] | list[bytes]) -> Frames:
    return [json.dumps(header).encode(), *buffers]


def put(tree: dict, path: tuple, value: Any) -> None:
    for step in path[:-1]:
        tree = tree[step]
    tree[path[-1]] = value


# ---- message strategies (each returns (kind, frames)) ------------------------------------------------------

@st.composite
def raw_frames(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    return "raw bytes", draw(st.lists(st.binary(max_size=96), min_size=1, max_size=4))


@st.composite
def truncated_header(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    tpl = t[draw(st.sampled_from(sorted(t)))]
    head, *bufs = render(tpl.header(), tpl.buffers)
    return "truncated header", [head[:draw(st.integers(0, len(head) - 1))], *bufs]


@st.composite
def wrong_buffer_length(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    tpl = t[draw(st.sampled_from(["open_image", "strokes", "batch"]))]
    good = len(tpl.buffers[0])
    size = draw(st.integers(0, 2 * good + 1).filter(lambda n: n != good))
    return "buffer of the wrong length", render(tpl.header(), [draw(st.binary(min_size=size, max_size=size))])


@st.composite
def nbuf_off_by_one(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    tpl = t[draw(st.sampled_from(sorted(t)))]
    delta = draw(st.sampled_from([-1, 1]))
    return "nbuf off by one", render(tpl.header(nbuf=len(tpl.buffers) + delta), tpl.buffers)


@st.composite
def wrong_frame_count(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    tpl = t[draw(st.sampled_from(["open_image", "strokes", "batch"]))]
    delta = draw(st.sampled_from(tpl.bad_frame_deltas))
    buffers = list(tpl.buffers[:-1]) if delta < 0 else [*tpl.buffers, draw(st.binary(max_size=32))]
    return "wrong frame count", render(tpl.header(nbuf=len(buffers)), buffers)


@st.composite
def mutated_type(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    tpl = t[draw(st.sampled_from(sorted(t)))]
    fields = HEADER_FIELDS + tuple((("args", *path), accepts) for path, accepts in tpl.fields)
    path, accepts = draw(st.sampled_from(fields))
    header = tpl.header()
    put(header, path, draw(JSON_TREES.filter(lambda v: not accepts(v))))
    return "mutated type", render(header, tpl.buffers)


@st.composite
def huge_sizes(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    big = st.integers(min_value=10**5, max_value=10**400)
    choice = draw(st.sampled_from(["image", "batch item", "stroke mask", "coordinate", "nbuf", "version"]))
    if choice == "image":
        header = t["open_image"].header()
        header["args"].update(width=draw(big), height=draw(big | st.integers(1, 10)))
        if draw(st.booleans()):
            args = header["args"]
            args["width"], args["height"] = args["height"], args["width"]
        return "huge declared size", render(header, t["open_image"].buffers)
    if choice == "batch item":
        header = t["batch"].header()
        header["args"]["items"][0].update(width=draw(big), height=draw(big))
        return "huge declared size", render(header, t["batch"].buffers)
    if choice == "coordinate":  # beyond what a float holds
        header = t["predict"].header()
        header["args"]["prompts"]["clicks"][0][draw(st.sampled_from([0, 1]))] = draw(HUGE_INTS) * 10**310
        return "huge declared size", render(header, ())
    if choice == "stroke mask":
        header = t["strokes"].header()
        header["args"]["prompts"]["stroke_masks"][0].update(width=draw(big), x=draw(big))
        return "huge declared size", render(header, t["strokes"].buffers)
    tpl = t[draw(st.sampled_from(sorted(t)))]
    field = "nbuf" if choice == "nbuf" else "v"
    return "huge int", render(tpl.header(**{field: draw(HUGE_INTS)}), tpl.buffers)


@st.composite
def too_many_digits(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    # Beyond Python's 4300-digit limit for int parsing: only raw bytes can carry such a number.
    head, *bufs = render(t["open_image"].header(), t["open_image"].buffers)
    digits = b"9" * draw(st.integers(4301, 6000))
    return "too many digits", [head.replace(f'"width": {W}'.encode(), b'"width": ' + digits, 1), *bufs]


NUMBER = re.compile(rb"(?<=[:\[,] )-?\d+(?:\.\d+)?|(?<=[:\[,])-?\d+(?:\.\d+)?")


@st.composite
def non_finite_spliced(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    tpl = t[draw(st.sampled_from(["open_image", "predict", "strokes", "batch", "hello"]))]
    head, *bufs = render(tpl.header(), tpl.buffers)
    spots = list(NUMBER.finditer(head))
    spot = spots[draw(st.integers(0, len(spots) - 1))]
    word = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
    return "NaN/Infinity spliced", [head[:spot.start()] + word + head[spot.end():], *bufs]


@st.composite
def unknown_names(draw: st.DrawFn, t: dict[str, Template], sid: str) -> tuple[str, Frames]:
    choice = draw(st.sampled_from(["method", "session", "token", "id"]))
    if choice == "id":
        # Any string, empty or longer than allowed; the request fails anyway (unknown session), the id
        # must not break the way back.
        header = t["reset"].header(id=draw(TEXT | st.text(min_size=120, max_size=140)))
        header["args"]["session"] = draw(TEXT.filter(lambda s: s != sid))
        return "odd request id", render(header, ())
    if choice == "method":
        header = t["hello"].header(method=draw(TEXT.filter(lambda m: m not in P.METHODS)))
        return "unknown method", render(header, ())
    if choice == "session":
        tpl = t[draw(st.sampled_from(["predict", "reset", "close"]))]
        header = tpl.header()
        header["args"]["session"] = draw(TEXT.filter(lambda s: s != sid))
        return "unknown session", render(header, tpl.buffers)
    tpl = t[draw(st.sampled_from(sorted(t)))]
    return "wrong token", render(tpl.header(token=draw(TEXT.filter(lambda s: s != TOKEN))), tpl.buffers)


@st.composite
def random_trees(draw: st.DrawFn, t: dict[str, Template]) -> tuple[str, Frames]:
    if draw(st.booleans()):
        return "random header", [json.dumps(draw(JSON_TREES)).encode()]
    # hello and cancel accept (or ignore) arbitrary arguments, the others need ones no random tree can give.
    tpl = t[draw(st.sampled_from(["open_image", "predict", "reset", "close", "batch"]))]
    args = draw(st.dictionaries(st.sampled_from(KEYS) | TEXT, JSON_TREES, max_size=5))
    return "random arguments", render(tpl.header(args=args, nbuf=0), ())


@functools.lru_cache(maxsize=4)
def messages(sid: str) -> st.SearchStrategy[tuple[str, Frames]]:
    t = templates(sid)
    # one_of favours its first branches a little; the richest kinds come first.
    return st.one_of(mutated_type(t), huge_sizes(t), nbuf_off_by_one(t), wrong_frame_count(t),
                     wrong_buffer_length(t), truncated_header(t), non_finite_spliced(t),
                     unknown_names(t, sid), random_trees(t), too_many_digits(t), raw_frames(t))


KINDS = {"raw bytes", "truncated header", "buffer of the wrong length", "nbuf off by one",
         "wrong frame count", "mutated type", "huge declared size", "huge int", "too many digits",
         "NaN/Infinity spliced", "unknown method", "unknown session", "wrong token", "odd request id",
         "random header", "random arguments"}


# ---- the test ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_server(engine) -> Iterator[Server]:  # noqa: F811
    with running_server(engine) as srv:
        yield srv


def open_session(peer: RawPeer) -> str:
    reply = peer.call("open_image", {"width": W, "height": H, "channels": 3}, [rgb_image(W, H)])
    assert reply.kind == "reply", reply.error
    return reply.result["session"]


def is_refusal(reply: P.Reply) -> bool:
    """An error reply, or a batch reply in which every item failed (a bad item fails alone, by design)."""
    if reply.kind == P.KIND_ERROR:
        return True
    results = (reply.result or {}).get("results")
    return reply.kind == P.KIND_REPLY and bool(results) and all(r.get("error") for r in results)


def error_code(reply: P.Reply) -> str:
    if reply.kind == P.KIND_ERROR:
        return reply.error["code"]
    return reply.result["results"][0]["error"]["code"]


def test_thousands_of_fuzzed_messages_get_errors_and_the_server_keeps_serving(fuzz_server):
    peer = RawPeer(fuzz_server.bound_endpoint)
    sid = open_session(peer)
    ids = itertools.count()
    kinds: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def one_message(data: st.DataObject) -> None:
        kind, frames = data.draw(messages(sid), label="message")
        frames = [frames[0].replace(ID_PLACEHOLDER.encode(), f"fz{next(ids)}".encode(), 1), *frames[1:]]
        kinds[kind] += 1
        peer.send(frames)
        reply = peer.final(10)
        assert is_refusal(reply), (kind, frames[0][:300], reply.result)
        code = error_code(reply)
        assert code in P.ERROR_CODES and code != P.E_INTERNAL, (kind, frames[0][:300], reply.error)

    try:
        one_message()
        assert sum(kinds.values()) >= EXAMPLES
        assert set(kinds) == KINDS, KINDS - set(kinds)
        assert fuzz_server.stats["errors"] >= EXAMPLES
        # The server is still whole: it answers, and does real model work on the old and on a new session.
        assert peer.call("hello").kind == "reply"
        for session in (sid, open_session(peer)):
            ok = peer.call("predict", {"session": session, "prompts": {"box": [2, 2, 30, 30]}})
            assert ok.kind == "reply", ok.error
            assert len(ok.buffers[0]) == ok.result["w"] * ok.result["h"]
    finally:
        peer.close()
