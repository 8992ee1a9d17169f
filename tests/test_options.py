"""The engine's switches: one options object, read from the environment in one place, and the rules each round
went through."""

from dataclasses import fields

import numpy as np
import pytest

from backend.dfimat.model import build_tiny_checkpoint
from backend.runtime.engine import Engine
from backend.runtime.options import ENV_VARS, FINDERS, EngineOptions

SWITCHES = [f.name for f in fields(EngineOptions) if isinstance(f.default, bool)]


def test_every_option_has_one_variable():
    assert set(ENV_VARS) == {f.name for f in fields(EngineOptions)}
    assert len(set(ENV_VARS.values())) == len(ENV_VARS)


@pytest.mark.parametrize("word,value", [("0", False), ("off", False), ("No", False), ("1", True), ("on", True)])
def test_from_env_reads_each_switch(word, value):
    default = EngineOptions()
    for name in SWITCHES:
        opts = EngineOptions.from_env({ENV_VARS[name]: word})
        assert getattr(opts, name) is value
        assert all(getattr(opts, other) == getattr(default, other) for other in ENV_VARS if other != name)


@pytest.mark.parametrize("word", ["maybe", ""])
def test_an_unrecognised_word_keeps_the_default(word):
    assert EngineOptions.from_env({ENV_VARS[name]: word for name in SWITCHES}) == EngineOptions()


def test_the_finder_is_named_and_checked():
    for kind in FINDERS:
        assert EngineOptions.from_env({"DFIMAT_FINDER": kind.upper()}).finder == kind
    with pytest.raises(ValueError, match="finder"):
        EngineOptions.from_env({"DFIMAT_FINDER": "yolo"})


def test_overrides_keep_none_and_refuse_unknown_names():
    opts = EngineOptions(focus=False)
    assert opts.with_overrides(focus=None, pose_prior=False) == EngineOptions(focus=False, pose_prior=False)
    with pytest.raises(TypeError, match="fokus"):
        opts.with_overrides(fokus=True)
    with pytest.raises(AttributeError):
        opts.focus = True  # frozen: an engine's options change only by replacement


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt")


def test_load_takes_options_env_then_keywords(weights, monkeypatch):
    monkeypatch.setenv("DFIMAT_KEEP_MARKS", "0")
    assert Engine.load(device="cpu", weights=weights, runtime="torch").options.keep_marks is False
    given = EngineOptions(focus=False, keep_marks=True)
    engine = Engine.load(device="cpu", weights=weights, runtime="torch", options=given, pose_prior=False)
    assert engine.options == EngineOptions(focus=False, keep_marks=True, pose_prior=False)


def test_rules_are_recorded_per_round_and_cleared_by_reset(weights):
    engine = Engine.load(device="cpu", weights=weights, runtime="torch",
                         options=EngineOptions(pose_prior=False, take_out_others=False, text_grounding=False,
                                               box_prior_fallback=False))
    sid = engine.open(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    engine.predict(sid, {"box": [10, 5, 50, 55]})
    engine.predict(sid, {"clicks": [[30, 30, True]]})
    rounds = engine.rules(sid)
    assert len(rounds) == 2
    assert "box_support" in rounds[0] and "keep_marks" not in rounds[0]
    assert "keep_marks" in rounds[1] and "drop_unmarked_parts" not in rounds[1]  # a box session keeps its parts
    assert not {"pose_prior", "take_out_others", "text_grounding"} & set(rounds[0] + rounds[1])
    engine.reset(sid)
    assert engine.rules(sid) == []
    engine.predict(sid, {"clicks": [[30, 30, True]]})
    assert engine.rules(sid)[0][-2:] == ("drop_unmarked_parts", "keep_marks")


@pytest.mark.parametrize("boxes", [False, True])
def test_the_split_asks_the_finder_for_the_chosen_boxes(weights, monkeypatch, boxes):
    import backend.runtime.people
    from backend.runtime.people import Found

    asked = []
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[10:50, 20:40] = True

    class _Finder:
        def find(self, picture, **_):
            return Found(small=picture, people=[([18.0, 8.0, 42.0, 52.0], mask)])

    monkeypatch.setattr(backend.runtime.people, "people_finder",
                        lambda kind, two_poses, detector_boxes: asked.append(detector_boxes) or _Finder())
    engine = Engine.load(device="cpu", weights=weights, runtime="torch",
                         options=EngineOptions(pose_prior=False, detector_boxes=boxes))
    sid = engine.open(image)
    assert engine.people_in(sid) == [[18.0, 8.0, 42.0, 52.0]]
    assert asked == [boxes]


@pytest.mark.parametrize(("finder", "tiles", "told"), [("nets", True, True), ("nets", False, False),
                                                         ("both", True, True), ("mediapipe", True, None)])
def test_the_split_asks_the_networks_to_look_in_the_corners_when_chosen(weights, monkeypatch, finder, tiles, told):
    import backend.runtime.people
    from backend.runtime.people import Found

    asked = []
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)

    class _Finder:
        def find(self, picture, **kw):
            asked.append(kw.get("net_tiles"))
            return Found(small=picture, people=[])

    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    monkeypatch.setattr(backend.runtime.people, "pose_detector", lambda: _Finder())
    engine = Engine.load(device="cpu", weights=weights, runtime="torch",
                         options=EngineOptions(pose_prior=False, finder=finder, every_person_tiles=tiles))
    sid = engine.open(image)
    assert engine.people_in(sid) == []
    assert asked == [told]  # mediapipe's own finder has no such argument
    engine.predict(sid, {"box": [10.0, 10.0, 50.0, 50.0]})  # the take-out reuses the split's finds
    assert asked == [told]


@pytest.mark.parametrize(("split", "everywhere"), [(True, False), (False, False), (False, True)])
def test_two_poses_stay_two_people_in_the_split_and_where_chosen(weights, monkeypatch, split, everywhere):
    import backend.runtime.people
    from backend.runtime.people import Found

    asked = []
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)

    class _Finder:
        def find(self, picture, **_):
            return Found(small=picture, people=[])

    monkeypatch.setattr(backend.runtime.people, "people_finder",
                        lambda kind, two_poses, detector_boxes: asked.append(two_poses) or _Finder())
    options = EngineOptions(pose_prior=False, split_two_poses=split, keep_two_poses=everywhere)
    engine = Engine.load(device="cpu", weights=weights, runtime="torch", options=options)
    split_session, box_session = engine.open(image), engine.open(image)
    engine.people_in(split_session)
    engine.predict(box_session, {"box": [10.0, 10.0, 50.0, 50.0]})  # a box session's take-out finds people itself
    assert asked == [split or everywhere, everywhere]
