"""A box session whose matte matches no found person still loses the finds beside the box (`EngineOptions.off_box`,
`backend.runtime.others.OFF_BOX_IOU`): the engine passing the user's box to the take-out only when switched on."""

import numpy as np
import pytest
import torch

import backend.runtime.people
from backend.dfimat.model import build_tiny_checkpoint
from backend.runtime.engine import Engine
from backend.runtime.options import EngineOptions
from backend.runtime.others import MIN_TARGET_IOU, FoundPerson
from backend.runtime.people import Found

torch.set_num_threads(1)
H, W = 100, 160
LEFT = FoundPerson((20, 10, 60, 90), np.ones((80, 40), bool))
RIGHT = FoundPerson((60, 10, 100, 90), np.ones((80, 40), bool))
BOX = [0.0, 0.0, 75.0, 100.0]  # around the left person, reaching a little over the right one


class _Finder:
    def find(self, image: np.ndarray, **kw: bool) -> Found:
        return Found(small=image, people=[(list(LEFT.rect), LEFT.paste((H, W))), (list(RIGHT.rect),
                                                                                  RIGHT.paste((H, W)))])


@pytest.fixture
def engine(tmp_path, monkeypatch):
    engine = Engine.load(device="cpu", weights=build_tiny_checkpoint(tmp_path / "tiny.pt"), runtime="torch",
                         focus=False, pose_prior=False)
    # The networks answer with the whole photo; cut to the box, that matte is nobody found (IoU with the left
    # person 0.4).
    monkeypatch.setattr(engine, "_refine", lambda image, lb, coarse, out=None, prior=None: np.ones((H, W), np.float32))
    monkeypatch.setattr(backend.runtime.people, "people_finder", lambda kind, *_: _Finder())
    return engine


@pytest.mark.parametrize("on", [False, True])
def test_a_box_matte_that_is_nobody_found_loses_the_person_beside_the_box_only_when_switched_on(engine, on):
    engine.options = engine.options.with_overrides(off_box=on)
    sid = engine.open(np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8))
    alpha = engine.predict(sid, {"box": BOX})
    support = np.zeros((H, W), bool)
    support[:, :79] = True  # the box grown by 5 %: the networks' answer cut to it
    assert LEFT.iou(support, int(support.sum())) < MIN_TARGET_IOU  # so the take-out has no find for the matte
    assert alpha[50, 40] == 1.0 and alpha[50, 10] == 1.0 and alpha[50, 80] == 0.0
    assert bool(alpha[50, 70] == 0.0) is on  # the right person's part inside the box
    assert ("take_out_others" in engine.rules(sid)[-1]) is on


def test_the_switch_is_on_by_default_and_follows_the_environment():
    assert EngineOptions().off_box is True
    assert EngineOptions.from_env({"DFIMAT_OFF_BOX": "0"}).off_box is False
