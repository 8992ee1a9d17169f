"""The marks ISCN (`DFIMatS.iscn_marks`, `EngineOptions.marks_iscn` / `marks_others`): carried by checkpoints,
`assemble` and the ONNX export, and asked by the engine only in sessions without box or text (their first round or
all of them), with the other found people in the negative marks' channel. Tiny random weights: these check where
each round goes, not accuracy."""

import numpy as np
import pytest
import torch
from torch import nn

import backend.runtime.people
from backend.dfimat.encoder import BACKBONE_CHANNELS
from backend.dfimat.iscn import best_mask
from backend.dfimat.model import build_tiny_checkpoint, load_checkpoint, new_iscn, save_checkpoint
from backend.dfimat.onnx_export import ISCN_MARKS, OnnxModel, compare, export
from backend.dfimat.prompts import Box, Click, PromptHistory, RoundPrompts
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions
from backend.runtime.people import Found
from backend.train.cli import main as train
from backend.train.iscn import Sampler, earlier_rounds

torch.set_num_threads(1)
H, W = 100, 160
LEFT = np.zeros((H, W), bool)
LEFT[10:90, 20:60] = True
RIGHT = np.zeros((H, W), bool)
RIGHT[10:90, 60:100] = True


class _Finder:
    def find(self, image: np.ndarray, **kw: bool) -> Found:
        return Found(small=image, people=[([20.0, 10.0, 60.0, 90.0], LEFT), ([60.0, 10.0, 100.0, 90.0], RIGHT)])


def _with_marks_iscn(tmp_path, name: str = "marks.pt"):
    """A tiny checkpoint whose marks ISCN differs from its main one."""
    model, _ = load_checkpoint(build_tiny_checkpoint(tmp_path / "tiny.pt"))
    torch.manual_seed(7)
    model.iscn_marks = new_iscn(model.config)
    return save_checkpoint(model, tmp_path / name), model


def test_a_checkpoint_carries_its_marks_iscn(tmp_path):
    path, model = _with_marks_iscn(tmp_path)
    loaded, _ = load_checkpoint(path)
    saved = {k: v.half().float() for k, v in model.iscn_marks.state_dict().items()}  # stored in fp16
    assert all(torch.equal(loaded.iscn_marks.state_dict()[k], v) for k, v in saved.items())
    assert not torch.equal(next(loaded.iscn_marks.parameters()), next(loaded.iscn.parameters()))
    assert load_checkpoint(tmp_path / "tiny.pt")[0].iscn_marks is None


def test_assemble_carries_a_stage_one_run_as_the_marks_iscn(tmp_path):
    tiny = build_tiny_checkpoint(tmp_path / "tiny.pt")
    other, _ = load_checkpoint(tiny)
    torch.manual_seed(3)
    other.iscn = new_iscn(other.config)
    save_checkpoint(other, tmp_path / "others-run.pt", meta={"stage": "iscn", "others": 0.6})
    out = tmp_path / "assembled.pt"
    assert train(["assemble", "--iscn", str(tiny), "--mrn", str(tiny), "--marks-iscn",
                  str(tmp_path / "others-run.pt"), "--out", str(out)]) == 0
    model, meta = load_checkpoint(out)
    assert meta["iscn_marks"] == {"stage": "iscn", "others": 0.6}
    first = {k: v.half().float() for k, v in other.iscn.state_dict().items()}
    assert all(torch.equal(model.iscn_marks.state_dict()[k], v) for k, v in first.items())



def test_assemble_takes_the_marks_iscn_of_an_assembled_checkpoint_that_carries_one(tmp_path):
    carrier, carrier_model = _with_marks_iscn(tmp_path)
    tiny = tmp_path / "tiny.pt"
    out = tmp_path / "assembled.pt"
    assert train(["assemble", "--iscn", str(tiny), "--mrn", str(tiny), "--marks-iscn", str(carrier),
                  "--out", str(out)]) == 0
    model, _ = load_checkpoint(out)
    marks = {k: v.half().float() for k, v in carrier_model.iscn_marks.state_dict().items()}
    assert all(torch.equal(model.iscn_marks.state_dict()[k], v) for k, v in marks.items())
    key = "pixel_decoder.lat.s8.weight"
    assert not torch.equal(model.iscn_marks.state_dict()[key], model.iscn.state_dict()[key])  # not its main ISCN

def test_the_export_writes_the_first_round_graph_and_drops_a_stale_one(tmp_path):
    path, _ = _with_marks_iscn(tmp_path)
    model, _ = load_checkpoint(path)
    export(model, tmp_path / "graphs")
    assert OnnxModel(tmp_path / "graphs").has_iscn_marks
    assert compare(model, tmp_path / "graphs")["iscn_marks_masks"] < 1e-3
    export(load_checkpoint(tmp_path / "tiny.pt")[0], tmp_path / "graphs")
    assert not (tmp_path / "graphs" / ISCN_MARKS).exists()
    assert not OnnxModel(tmp_path / "graphs").has_iscn_marks


class _Recorder(nn.Module):
    """Calls the wrapped ISCN and keeps the negative marks' dense channel each call saw."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.negatives: list[np.ndarray] = []

    def forward(self, feats, prompts, prev, has_prev):
        self.negatives.append(prompts["dense"][0, 1].numpy().copy())
        return self.inner(feats, prompts, prev, has_prev)


def _engine(tmp_path, monkeypatch, **switches: str) -> Engine:
    path, _ = _with_marks_iscn(tmp_path)
    options = EngineOptions().with_overrides(focus=False, pose_prior=False, take_out_others=False, **switches)
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    e = Engine.load(device="cpu", weights=path, runtime="torch", options=options)
    e.model.iscn, e.model.iscn_marks = _Recorder(e.model.iscn), _Recorder(e.model.iscn_marks)
    return e


IMAGE = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
CLICK = {"clicks": [[40.0, 50.0, True]]}
STROKE = {"scribbles": [{"points": [[30.0, 40.0], [40.0, 60.0]], "positive": True}]}
CORRECTION = {"clicks": [[45.0, 30.0, False]]}


def _right_is_other(grid: np.ndarray) -> bool:
    """The right person (not marked) is in the negative channel and the left one (marked) is not."""
    row = grid.shape[0] // 2
    return grid[row, int(80 / W * grid.shape[1])] == 1.0 and grid[row, int(40 / W * grid.shape[1])] == 0.0


@pytest.mark.parametrize("prompts", [CLICK, STROKE])
def test_with_first_the_first_round_of_marks_goes_to_the_marks_iscn_with_the_others(tmp_path, monkeypatch, prompts):
    engine = _engine(tmp_path, monkeypatch, marks_iscn="first")
    sid = engine.open(IMAGE)
    engine.predict(sid, prompts)
    marks, main = engine.model.iscn_marks, engine.model.iscn
    assert len(marks.negatives) == 1 and not main.negatives
    assert {"marks_iscn", "others_input"} <= set(engine.rules(sid)[-1])
    assert _right_is_other(marks.negatives[0])
    # The corrective round is the main ISCN's, with the user's marks alone.
    engine.predict(sid, CORRECTION)
    assert len(marks.negatives) == 1 and len(main.negatives) == 1
    assert not {"marks_iscn", "others_input"} & set(engine.rules(sid)[-1])


@pytest.mark.parametrize("others", ["first", "all"])
def test_with_all_every_round_of_marks_goes_to_the_marks_iscn(tmp_path, monkeypatch, others):
    engine = _engine(tmp_path, monkeypatch, marks_iscn="all", marks_others=others)
    sid = engine.open(IMAGE)
    engine.predict(sid, CLICK)
    engine.predict(sid, CORRECTION)
    marks = engine.model.iscn_marks
    assert len(marks.negatives) == 2 and not engine.model.iscn.negatives
    assert _right_is_other(marks.negatives[0])
    assert _right_is_other(marks.negatives[1]) == (others == "all")
    assert ("others_input" in engine.rules(sid)[-1]) == (others == "all")
    assert "marks_iscn" in engine.rules(sid)[-1]


@pytest.mark.parametrize("mode", ["first", "all"])
def test_box_sessions_stay_on_the_main_iscn(tmp_path, monkeypatch, mode):
    engine = _engine(tmp_path, monkeypatch, marks_iscn=mode)
    sid = engine.open(IMAGE)
    engine.predict(sid, {"box": [18.0, 8.0, 62.0, 92.0], **CLICK})
    engine.predict(sid, CORRECTION)
    assert not engine.model.iscn_marks.negatives and len(engine.model.iscn.negatives) >= 2
    assert not any("marks_iscn" in r for r in engine.rules(sid))


def test_text_rounds_and_switched_off_engines_stay_on_the_main_iscn(tmp_path, monkeypatch):
    engine = _engine(tmp_path, monkeypatch, marks_iscn="all")
    texted = PromptHistory()
    texted.add(RoundPrompts(text="the man on the left"))
    assert engine._marks_iscn(texted) is None
    marked = PromptHistory()
    marked.add(RoundPrompts.from_dict(CLICK, W, H))
    assert engine._marks_iscn(marked) is engine.model.iscn_marks
    engine.options = engine.options.with_overrides(marks_iscn="off")
    assert engine._marks_iscn(marked) is None


def test_weights_without_a_marks_iscn_answer_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    tiny = build_tiny_checkpoint(tmp_path / "tiny.pt")
    off = EngineOptions().with_overrides(focus=False, pose_prior=False, take_out_others=False)
    alphas = []
    for options in (off, off.with_overrides(marks_iscn="all")):
        e = Engine.load(device="cpu", weights=tiny, runtime="torch", options=options)
        sid = e.open(IMAGE)
        alphas.append(e.predict(sid, CLICK))
        assert "marks_iscn" not in e.rules(sid)[-1]
    assert np.array_equal(*alphas)


def test_the_onnx_runtime_asks_its_first_round_graph(tmp_path, monkeypatch):
    path, _ = _with_marks_iscn(tmp_path)
    model, _ = load_checkpoint(path)
    export(model, tmp_path / "graphs")
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    options = EngineOptions().with_overrides(focus=False, pose_prior=False, take_out_others=False, marks_iscn="all")
    graphs = OnnxModel(tmp_path / "graphs")
    calls: list[str] = []
    for name in ("iscn", "iscn_marks"):
        run = getattr(graphs, name)
        setattr(graphs, name, lambda *a, _run=run, _name=name: calls.append(_name) or _run(*a))
    alphas = []
    for onnx in (graphs, None):
        e = Engine(model, torch.device("cpu"), onnx=onnx, options=options)
        sid = e.open(IMAGE)
        alphas.append(e.predict(sid, CLICK))
        assert "marks_iscn" in e.rules(sid)[-1]
    assert calls == ["iscn_marks"]
    assert np.abs(alphas[0] - alphas[1]).max() < 1e-2


class _Calls(nn.Module):
    """Calls the wrapped ISCN and keeps every batch's negative channel and the masks it answered."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.negatives: list[torch.Tensor] = []
        self.answers: list[torch.Tensor] = []

    def forward(self, feats, prompts, prev, has_prev):
        self.negatives.append(prompts["dense"][:, 1].clone())
        masks, logits = self.inner(feats, prompts, prev, has_prev)
        self.answers.append(best_mask(masks, logits).sigmoid())
        return masks, logits


@pytest.mark.parametrize("rounds", [1, 2])
def test_training_hands_the_first_round_of_marks_led_samples_to_the_frozen_marks_iscn(tmp_path, rounds):
    _, model = _with_marks_iscn(tmp_path)
    size, g = model.config.size, model.config.size // 4
    main, helper = _Calls(model.iscn), _Calls(model.iscn_marks)
    model.iscn = main
    gt = np.zeros((size, size), bool)
    gt[20:110, 10:60] = True
    others = np.zeros((g, g), np.float32)
    others[5:28, 17:30] = 1.0  # a neighbour on the right
    samples = []
    for first in (RoundPrompts(clicks=(Click(35.0, 60.0, True),)), RoundPrompts(box=Box(10.0, 20.0, 60.0, 110.0))):
        history = PromptHistory()
        history.add(first)
        samples.append({"gt": gt, "ignore": np.zeros_like(gt), "history": history, "last": first,
                        "others": others})
    torch.manual_seed(0)
    feats = {k: torch.randn(2, c, size // s, size // s)
             for (k, c), s in zip(BACKBONE_CHANNELS.items(), (4, 8, 16, 32), strict=True)}
    sampler = Sampler([], [], np.random.default_rng(0))
    prev, has_prev = earlier_rounds(model, feats, samples, sampler, rounds, size, lambda t: np.zeros(512, np.float32),
                                    first_iscn=helper)
    assert bool(has_prev.all())
    # The marks ISCN answers round 1 once and sees the others; the trained ISCN does not see them.
    assert len(helper.negatives) == 1 and len(main.negatives) == rounds
    assert bool((helper.negatives[0][:, 10, 20] == 1).all())
    assert float(main.negatives[0].max()) == 0.0  # round 1 has positive marks only
    if rounds == 1:  # the click-led sample carries on from the marks ISCN's answer, the box-led one from its own
        assert torch.allclose(prev[0, 0], helper.answers[0][0]) and torch.allclose(prev[1, 0], main.answers[0][1])
        assert not torch.allclose(helper.answers[0][0], main.answers[0][0])
    else:  # round 2 is the trained ISCN's for both
        assert torch.allclose(prev[:, 0], main.answers[1])
