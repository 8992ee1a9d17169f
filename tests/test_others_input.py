"""Other people as an input to the networks (`EngineOptions.others_input`): which finds the prompts do not point at
(`backend.runtime.others.prompted_others`), how they reach the ISCN (the negative marks' dense channel), and the
training side's finder-like other people (`backend.data.simulate.found_others`)."""

import cv2
import numpy as np
import pytest
import torch

import backend.runtime.engine
import backend.runtime.people
from backend.data.simulate import OTHER_GROW_MAX, found_others
from backend.dfimat.encoder import Letterbox
from backend.dfimat.model import build_tiny_checkpoint
from backend.dfimat.prompt_tensors import build_prompt_tensors
from backend.dfimat.prompts import Click, PromptHistory, RoundPrompts
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions
from backend.runtime.others import OTHERS_SHRINK_PX, FoundPerson, marked, prompted_others
from backend.runtime.people import Found

torch.set_num_threads(1)
H, W = 100, 160


def _person(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


LEFT, RIGHT, FAR = _person(20, 10, 60, 90), _person(60, 10, 100, 90), _person(120, 40, 150, 95)
FINDS = [FoundPerson.from_mask(m) for m in (LEFT, RIGHT, FAR)]


def test_a_box_marks_the_finds_it_does_not_fit_as_others():
    out = prompted_others(FINDS, (H, W), (H, W), [18.0, 8.0, 62.0, 92.0], [])
    g = OTHERS_SHRINK_PX
    assert not (out & LEFT).any()
    # Each other find shrunk by g px: the touching edge stays free for the target's outline.
    assert out[50, 60 + g] and not out[50, 60 + g - 1] and out[50, 135] and out[40 + g, 135]
    assert not out[40 + g - 1, 135]


def test_a_loose_box_over_two_people_marks_neither_of_them():
    out = prompted_others(FINDS, (H, W), (H, W), [15.0, 5.0, 105.0, 95.0], [])
    assert not (out & (LEFT | RIGHT)).any() and out[60, 135]


def test_positive_marks_point_at_their_find_and_are_never_covered():
    out = prompted_others(FINDS, (H, W), (H, W), None, [(80.0, 50.0)])
    assert not (out & RIGHT).any() and out[50, 40] and out[60, 135]
    # A positive mark inside someone else's find: that pixel stays free whatever the finder thinks.
    out = prompted_others(FINDS, (H, W), (H, W), None, [(40.0, 50.0), (130.0, 60.0)])
    assert not out[60, 130] and not (out & LEFT).any()


def test_a_find_whose_rectangle_holds_a_positive_mark_is_never_someone_else():
    """The finder can give the clicked person's pixels to a neighbour: a click on the target that lands nearest to
    the neighbour's mask, inside the rectangle of the target's partial find, keeps both unmarked."""
    target_part = _person(20, 10, 35, 90) | _person(20, 10, 50, 14)  # the target's find, short of its right side
    neighbour = _person(45, 20, 80, 90)  # a neighbour's find that took those pixels
    finds = [FoundPerson.from_mask(m) for m in (target_part, neighbour, FAR)]
    click = [(44.0, 50.0)]  # 1 px from the neighbour's mask, 9 px from the target's, inside the target's rectangle
    assert prompted_others(finds, (H, W), (H, W), None, click)[60, 135]
    assert not (prompted_others(finds, (H, W), (H, W), None, click) & (target_part | neighbour)).any()
    # Nearest-mask marking alone would have marked the target's find as someone else.
    assert marked(finds, click, (1.0, 1.0)) == {1}


def test_a_negative_mark_on_a_find_makes_it_someone_else_whatever_its_rectangle_holds():
    """A small target in front of a big neighbour: the positive click lies inside the neighbour's rectangle only, so
    the neighbour may be the target, until the user puts a negative mark on the neighbour's mask."""
    small = _person(40, 60, 50, 90)  # the target, missed by the finder: not among the finds
    big = _person(20, 10, 70, 95) & ~small
    finds = [FoundPerson.from_mask(m) for m in (big, FAR)]
    click = [(45.0, 75.0)]
    assert not (prompted_others(finds, (H, W), (H, W), None, click) & big).any()
    out = prompted_others(finds, (H, W), (H, W), None, click, negatives=[(30.0, 40.0)])
    # No find is the target any more: only the one the user said no to is marked, never the clicked pixel.
    assert out[40, 30] and not out[60, 135] and not out[75, 45]
    # A positive mark on the same find's mask wins: the user asked for that person too.
    assert not (prompted_others(finds, (H, W), (H, W), None, [*click, (60.0, 30.0)], negatives=[(30.0, 40.0)])
                & big).any()
    # The box's finds stay the target.
    boxed = prompted_others(FINDS, (H, W), (H, W), [18.0, 8.0, 62.0, 92.0], [], negatives=[(40.0, 50.0)])
    assert not (boxed & LEFT).any() and boxed[50, 80]


def test_prompts_that_point_at_no_find_mark_nobody():
    assert prompted_others(FINDS, (H, W), (H, W), None, []) is None
    assert prompted_others(FINDS, (H, W), (H, W), None, [(5.0, 5.0)]) is None  # a click on the background
    assert prompted_others(FINDS, (H, W), (H, W), [0.0, 0.0, 10.0, 10.0], []) is None  # a box around nobody
    assert prompted_others(FINDS[:1], (H, W), (H, W), [18.0, 8.0, 62.0, 92.0], []) is None  # one find: nobody else


def test_finds_on_a_downscaled_picture_use_image_coordinates_for_the_prompts():
    half = [FoundPerson.from_mask(m[::2, ::2]) for m in (LEFT, RIGHT, FAR)]
    out = prompted_others(half, (H // 2, W // 2), (H, W), [18.0, 8.0, 62.0, 92.0], [])
    assert out.shape == (H // 2, W // 2) and not (out & LEFT[::2, ::2]).any() and out[25, 40]


def test_others_join_the_negative_marks_channel_only():
    lb = Letterbox(H, W, 64)
    history = PromptHistory()
    history.add(RoundPrompts(clicks=(Click(40.0, 50.0, True),)))
    plain = build_prompt_tensors(history, history.rounds[-1], lb)
    others = np.zeros((16, 16), np.float32)
    others[4:8, 9:12] = 1.0
    joined = build_prompt_tensors(history, history.rounds[-1], lb, others=others)
    assert np.array_equal(joined.dense[1], np.maximum(plain.dense[1], others))
    assert np.array_equal(np.delete(joined.dense, 1, axis=0), np.delete(plain.dense, 1, axis=0))
    assert np.array_equal(joined.points, plain.points)  # no point tokens: the networks see a region, not marks


def test_found_others_are_the_other_people_as_a_finder_would_report_them():
    labels = np.zeros((96, 96), np.uint8)
    labels[10:90, 5:30], labels[10:90, 30:60], labels[40:90, 70:90], labels[0:5, 0:5] = 1, 2, 3, 255
    runs = [found_others(labels, 1, np.random.default_rng(seed)) for seed in range(60)]
    assert np.array_equal(runs[0], found_others(labels, 1, np.random.default_rng(0)))  # seeded
    target = labels == 1
    # On the target: the neighbours' grown edges, and at most a fifth of it as a piece given to someone else.
    reach = cv2.dilate(((labels > 1) & (labels < 255)).astype(np.uint8),
                       np.ones((2 * OTHER_GROW_MAX + 1,) * 2, np.uint8)) > 0
    assert all((r & target & ~reach).sum() <= 0.2 * target.sum() for r in runs)
    assert not any((r & (labels == 255)).any() and not (r & (labels > 1) & (labels < 255)).any() for r in runs)
    found2 = [(r & (labels == 2)).mean() > 0 for r in runs]
    assert 0.5 < np.mean(found2) < 1.0  # people are missed sometimes, not always
    assert any((r & target).any() for r in runs) and not all((r & target).any() for r in runs)


def test_found_others_can_spare_the_people_whose_rectangle_holds_a_positive_mark():
    labels = np.zeros((96, 96), np.uint8)
    labels[5:95, 20:80], labels[40:90, 88:96] = 2, 3  # 3 is beyond the reach of 2's grown mask
    labels[30:90, 40:50] = 1  # a small target in front of a big neighbour (2); a third person (3) to the right
    click = [(45.0, 60.0)]
    for seed in range(30):
        plain = found_others(labels, 1, np.random.default_rng(seed))
        spared = found_others(labels, 1, np.random.default_rng(seed), positives=click)
        # The neighbour's rectangle holds the click whatever its shrinking: it is never among the others then.
        assert not (spared & (labels == 2)).any()
        assert np.array_equal(spared & (labels == 3), plain & (labels == 3))
    assert any((found_others(labels, 1, np.random.default_rng(s)) & (labels == 2)).any() for s in range(30))


class _Finder:
    def find(self, image: np.ndarray, **kw: bool) -> Found:
        return Found(small=image, people=[([20.0, 10.0, 60.0, 90.0], LEFT), ([60.0, 10.0, 100.0, 90.0], RIGHT)])


@pytest.mark.parametrize("mode", ["off", "first", "all"])
def test_the_engine_gives_the_networks_the_others_in_every_prompt_mode(tmp_path, monkeypatch, mode):
    options = EngineOptions().with_overrides(focus=False, pose_prior=False, take_out_others=False, others_input=mode)
    engine = Engine.load(device="cpu", weights=build_tiny_checkpoint(tmp_path / "tiny.pt"), runtime="torch",
                         options=options)
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    seen: list = []
    build = backend.runtime.engine.build_prompt_tensors

    def recording(history, new, lb, embed=None, others=None):
        seen.append((lb, others))
        return build(history, new, lb, embed, others)

    monkeypatch.setattr(backend.runtime.engine, "build_prompt_tensors", recording)
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for prompts in ({"box": [18.0, 8.0, 62.0, 92.0]}, {"clicks": [[40.0, 50.0, True]]},
                    {"scribbles": [{"points": [[30.0, 40.0], [40.0, 60.0]], "positive": True}]}):
        seen.clear()
        sid = engine.open(image)
        engine.predict(sid, prompts)
        lb, others = seen[-1]
        assert ("others_input" in engine.rules(sid)[-1]) == (mode != "off")
        if mode == "off":
            assert others is None
            continue
        # The grid cell over the right person is marked, the one over the left (the prompted one) is not.
        (cr, rr), (cl, rl) = (_cell(lb, others.shape[0], x, 50.0) for x in (80.0, 40.0))
        assert others[rr, cr] == 1.0 and others[rl, cl] == 0.0, prompts
        # A corrective round: with "first", the user's marks alone steer from here on.
        seen.clear()
        engine.predict(sid, {"clicks": [[45.0, 30.0, False]]})
        assert (seen[-1][1] is None) == (mode == "first")
        assert ("others_input" in engine.rules(sid)[-1]) == (mode == "all")


def _cell(lb: Letterbox, g: int, x: float, y: float) -> tuple[int, int]:
    """(column, row) of the G x G grid cell over image pixel (x, y)."""
    col, row = lb.to_model(np.array([x, y], np.float32)) * g / lb.size
    return int(col), int(row)


def test_the_training_sampler_gives_finder_like_others_to_multi_person_samples():
    from backend.train.iscn import Sampler

    labels = np.zeros((1, 64, 64), np.uint8)
    labels[0, 4:60, 4:24], labels[0, 4:60, 36:56] = 1, 2
    cache = {"meta": {"count": 1, "entries": [{"key": "two", "targets": 2, "box_only": False}]}, "labels": labels}
    texts = [[[[], []]]]
    samples = [Sampler([cache], texts, np.random.default_rng(seed), others=1.0).draw() for seed in range(20)]
    for s in samples:
        assert s["others"] is None or s["others"].shape == (16, 16)
        if s["others"] is not None:
            target_cells = s["gt"].reshape(16, 4, 16, 4).mean(axis=(1, 3)) >= 0.5
            assert s["others"][target_cells].mean() <= 0.25  # at most a piece of the target
    marked = [s for s in samples if s["others"] is not None and s["others"].any()]
    assert len(marked) >= 10  # the other person is missed now and then, not mostly
    # Without --others nothing changes, and the draw takes no extra random numbers (old runs stay reproducible).
    plain = Sampler([cache], texts, np.random.default_rng(3)).draw()
    zero = Sampler([cache], texts, np.random.default_rng(3), others=0.0).draw()
    assert plain["others"] is None and zero["others"] is None and np.array_equal(plain["gt"], zero["gt"])


def test_with_spare_marked_the_sampler_leaves_out_whoever_a_positive_first_mark_lies_in():
    from backend.train.iscn import Sampler

    labels = np.zeros((1, 64, 64), np.uint8)
    labels[0, 4:60, 4:40], labels[0, 30:60, 14:26] = 2, 1  # a small target in front of a big neighbour
    cache = {"meta": {"count": 1, "entries": [{"key": "front", "targets": 2, "box_only": False}]}, "labels": labels}
    texts = [[[[], []]]]
    counts = {False: [0, 0], True: [0, 0]}  # [samples with positive marks on the small target, neighbour marked]
    for spare in (False, True):
        for seed in range(40):
            s = Sampler([cache], texts, np.random.default_rng(seed), others=1.0, spare_marked=spare).draw()
            first = s["history"].rounds[0]
            marks = [c for c in first.clicks if c.positive] + [line for line in first.scribbles if line.positive]
            if s["others"] is not None and marks and (s["gt"] == (labels[0] == 1)).all():
                counts[spare][0] += 1
                counts[spare][1] += int(s["others"].any())
    # The target's marks always lie inside the neighbour's rectangle: spared, the neighbour is never marked.
    assert counts[True][0] >= 5 and counts[True][1] == 0
    assert counts[False][1] > 0
