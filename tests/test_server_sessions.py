"""Session store (LRU under a memory budget) and a soak run that bounds memory growth."""

from __future__ import annotations

import numpy as np
import pytest

from backend.serving.sessions import SessionStore
from dfimat_client import Client
from dfimat_client import protocol as P
from tests.test_server_fixtures import TOKEN, engine, rgb_image, rss_bytes, running_server  # noqa: F401


def image(seed: int, w: int = 32, h: int = 24) -> np.ndarray:
    return np.frombuffer(rgb_image(w, h, seed), np.uint8).reshape(h, w, 3)


def test_lru_eviction_under_the_byte_budget(engine):  # noqa: F811
    probe = SessionStore(engine)
    per = probe.open(image(0), None, "p").cost  # the engine reports what one session holds
    probe.close_all()
    assert per > 32 * 24 * 3
    store = SessionStore(engine, budget_bytes=per * 2 + per // 2, max_sessions=10)
    a = store.open(image(1), None, "a")
    b = store.open(image(2), None, "b")
    store.get(a.sid)  # a is now the most recently used
    c = store.open(image(3), None, "c")
    assert len(store) == 2 and store.used_bytes <= store.budget_bytes
    with pytest.raises(P.ProtocolError) as info:
        store.get(b.sid)
    assert info.value.code == P.E_SESSION_EVICTED
    assert store.get(a.sid) is a and store.get(c.sid) is c
    with pytest.raises(P.ProtocolError) as info:
        store.get("never-existed")
    assert info.value.code == P.E_UNKNOWN_SESSION


def test_count_limit_and_a_single_oversized_session(engine):  # noqa: F811
    store = SessionStore(engine, budget_bytes=10, max_sessions=3)
    s = store.open(image(1), None, "a")  # bigger than the whole budget: kept, alone
    assert len(store) == 1 and store.get(s.sid) is s
    store.open(image(2), None, "b")
    assert len(store) == 1
    store = SessionStore(engine, budget_bytes=1 << 30, max_sessions=2)
    for i in range(4):
        store.open(image(i), None, str(i))
    assert len(store) == 2


def test_key_and_hash_lookup_and_replacement(engine):  # noqa: F811
    store = SessionStore(engine)
    a = store.open(image(1), "gimp:1:1", "h1")
    assert store.find("gimp:1:1", "h1") is a
    assert store.find(None, "h1") is None  # keyless sessions are never shared
    assert store.find("gimp:1:1", "h2") is None
    b = store.open(image(2), "gimp:1:1", "h2")  # the layer changed: the old session goes
    assert len(store) == 1 and store.find("gimp:1:1", "h2") is b
    with pytest.raises(P.ProtocolError):
        store.get(a.sid)
    store.close(b.sid)
    assert len(store) == 0
    with pytest.raises(ValueError):
        SessionStore(engine, budget_bytes=0)


def test_find_image_by_hash_under_any_key(engine):  # noqa: F811
    store = SessionStore(engine)
    a = store.open(image(1), "gimp:1:1", "h1")
    b = store.open(image(1), None, "h1")
    unhashed = store.open(image(2), None, None)
    assert store.find_image("h1") is b  # the most recently used one
    store.get(a.sid)
    assert store.find_image("h1") is a
    assert store.find_image("h2") is None and unhashed.image_hash is None
    copy = store.open(a.image, "krita:x:y", "h1")  # a new session on the held pixels
    assert copy.sid not in (a.sid, b.sid) and (copy.width, copy.height) == (a.width, a.height)
    store.close_all()
    assert store.find_image("h1") is None


def test_soak_thousands_of_requests_keep_memory_bounded(engine):  # noqa: F811
    """2000 requests (predict/reset/hello rounds, open/close every tenth); after warm-up RSS grows < 40 MB."""
    w, h = 64, 48
    with running_server(engine) as srv, Client(srv.bound_endpoint, TOKEN, timeout=10) as c:
        sid = c.open_image(rgb_image(w, h), w, h, 3)

        def cycle(i: int) -> None:
            nonlocal sid
            c.predict(sid, {"box": [2, 2, 40, 40]})
            c.reset(sid)
            c.hello()
            if i % 10 == 9:
                c.close(sid)
                sid = c.open_image(rgb_image(w, h, seed=i % 5), w, h, 3)
            else:
                c.hello()

        for i in range(40):
            cycle(i)
        base = rss_bytes()
        for i in range(500):
            cycle(i)
        growth = rss_bytes() - base
        assert len(srv.sessions) == 1
    assert growth < 40 * 1024**2, f"RSS grew by {growth / 1e6:.1f} MB"


def test_a_session_lent_from_a_live_one_is_not_encoded_again(engine, monkeypatch):  # noqa: F811
    store = SessionStore(engine)
    first = store.open(image(5), "gimp:a", "h5")
    encodes = []
    monkeypatch.setattr(engine, "_encode", lambda *a: encodes.append(a) or pytest.fail("encoded again"))
    second = store.open(first.image, "krita:b", "h5", source=first)
    assert not encodes and second.engine_sid != first.engine_sid
    # Independent sessions on shared features: a round in one leaves the other without history.
    alpha = engine.predict(second.engine_sid, {"box": [2, 2, 20, 20]})
    assert alpha.shape == (24, 32)
    assert engine._get(first.engine_sid).history.rounds == [] and engine._get(first.engine_sid).prev is None
    store.close(first.sid)
    assert engine.predict(second.engine_sid, {"clicks": [[10, 10, True]]}).shape == (24, 32)
    monkeypatch.undo()
    store.close_all()
