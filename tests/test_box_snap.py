"""A loose box snapped to the found person it was drawn around (`backend.runtime.box_snap`), and the engine's use of
it: the networks see the find's box, the matte's bound and the session keep the user's."""

import numpy as np
import pytest

from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompts import Box
from backend.runtime.box_snap import snapped_box
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions

PERSON = [40.0, 30.0, 80.0, 110.0]  # 40 x 80
LOOSE = Box(30.0, 18.0, 90.0, 122.0)  # 15 % looser on every side: 1.69x the area


def test_a_loose_box_around_one_find_takes_the_finds_box():
    assert snapped_box(LOOSE, [PERSON]) == Box(*PERSON)
    # A find reaching a little past the user's box (92 % inside) is cut to it: what lies outside is not asked for.
    assert snapped_box(LOOSE, [[31.0, 10.0, 79.0, 110.0]]) == Box(31.0, 18.0, 79.0, 110.0)
    assert snapped_box(LOOSE, [[31.0, -20.0, 79.0, 100.0]]) is None  # 68 % inside: drawn around someone else


def test_a_tight_box_stays_as_drawn():
    assert snapped_box(Box(38.0, 27.0, 82.0, 113.0), [PERSON]) is None  # 1.18x the find's area


def test_a_find_not_around_the_box_or_a_small_one_inside_does_not_snap():
    assert snapped_box(LOOSE, [[200.0, 30.0, 240.0, 110.0]]) is None  # elsewhere
    assert snapped_box(LOOSE, [[60.0, 90.0, 70.0, 110.0]]) is None  # a child's box in the corner: IoU < 0.4
    assert snapped_box(LOOSE, [[0.0, 0.0, 0.0, 0.0]]) is None  # an empty box


def test_two_finds_that_fit_about_equally_leave_the_box_alone():
    left, right = [31.0, 20.0, 62.0, 120.0], [58.0, 20.0, 89.0, 120.0]
    assert snapped_box(LOOSE, [left, right]) is None
    # A clearly better fit wins over a small second one.
    assert snapped_box(LOOSE, [PERSON, [70.0, 100.0, 85.0, 120.0]]) == Box(*PERSON)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


@pytest.mark.parametrize("snap", [False, True])
def test_the_networks_see_the_snapped_box_and_the_session_keeps_the_users(weights, monkeypatch, snap):
    import backend.runtime.people
    from backend.runtime.people import Found

    image = np.random.default_rng(0).integers(0, 256, (140, 160, 3), dtype=np.uint8)
    mask = np.zeros((140, 160), bool)
    mask[30:110, 40:80] = True

    class _Finder:
        def find(self, picture, **_):
            return Found(small=picture, people=[(PERSON, mask)])

    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    engine = Engine.load(device="cpu", weights=weights, runtime="torch",
                         options=EngineOptions(pose_prior=False, box_snap=snap, focus=False))
    seen = []
    original = engine._localise
    monkeypatch.setattr(engine, "_localise", lambda s, history, new, *a: seen.append(history.box) or original(
        s, history, new, *a))
    sid = engine.open(image)
    engine.predict(sid, {"box": LOOSE.as_list()})
    assert seen[0] == (Box(*PERSON) if snap else LOOSE)
    assert ("box_snap" in engine.rules(sid)[0]) is snap
    assert engine._sessions[sid].history.box == LOOSE
    first_call = len(seen)
    engine.predict(sid, {"clicks": [[60.0, 70.0, True]]})  # a corrective round still sees the snapped box
    assert seen[first_call] == (Box(*PERSON) if snap else LOOSE)
