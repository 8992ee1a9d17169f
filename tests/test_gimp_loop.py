"""The refinement loop in a real GIMP 3.0.4 (Debian 13 root, GUI under Xvfb), as a user drives it.

A box and a first run; a pencil line on a "DFIMat -" layer that stays the active layer; the second run started
from the keyboard in the image window (the shortcut, then OK in the dialog); one Ctrl+Z; a run with a channel
active; the matte view opened and closed. The backend is the project's server around a rule-following engine
(tests/loop_harness/backend.py), so the test knows exactly which pixels each round may change. Driven by
tests/loop_harness/gimp_loop.py. About 20-30 s with the root built.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.editors import sandbox
from tests.loop_harness.backend import rule_backend

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "samples" / "astronaut.png"
BOX = (150, 40, 400, 500)  # x0, y0, x1, y1 around the astronaut, in layer = canvas coordinates
MINUS = {"points": [180, 300, 370, 300], "width": 9}  # across the person, inside the box
PLUS = {"points": [60, 100, 60, 160], "width": 9}  # outside the box
# GIMP reads shortcuts for plug-in commands from shortcutsrc; a user assigns one in Edit → Keyboard Shortcuts.
SHORTCUT = ("<Primary><Alt><Shift>m", "ctrl+alt+shift+m")
# Pixels a stroke may change around its painted line: the backend turns the painted pixels into a scribble of the
# same width, whose round ends reach half a width further.
REACH_PX = 6


def _home(tmp_path: Path) -> Path:
    from installer.plugins import install_gimp_plugin

    home = tmp_path / "home"
    gimp_dir = home / ".config" / "GIMP" / "3.0"
    install_gimp_plugin(gimp_dir / "plug-ins")
    # The first-start welcome dialog would sit on top of the image window that gets the keys.
    (gimp_dir / "gimprc").write_text("(show-welcome-dialog no)\n")
    (gimp_dir / "shortcutsrc").write_text(
        f'(file-version 1)\n(action "plug-in-dfimat-layer-mask" "{SHORTCUT[0]}")\n')
    return home


def _line_mask(line: dict, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    x0, y0, x1, y1 = line["points"]
    cv2.line(mask, (x0, y0), (x1, y1), 255, line["width"])
    return mask > 0


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _shrink(mask: np.ndarray, px: int) -> np.ndarray:
    return ~_grow(~mask, px)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    sandbox.require(sandbox.TRIXIE)
    work = tmp_path_factory.mktemp("gimp-loop")
    out = work / "out"
    out.mkdir()
    photo = work / PHOTO.name
    shutil.copyfile(PHOTO, photo)
    home = _home(work)
    scenario = {"photo": str(photo), "box": list(BOX), "minus": MINUS, "plus": PLUS, "out": str(out),
                "shortcut": SHORTCUT[1]}
    (work / "scenario.json").write_text(json.dumps(scenario))
    with rule_backend(work) as backend:
        started = time.monotonic()
        run = sandbox.TRIXIE.run_in_root(
            [*sandbox.xvfb_run(), "gimp-3.0", "--no-splash", "--batch-interpreter=python-fu-eval", "-b", "-",
             "--quit"],
            binds=[work], env={"HOME": str(home), "DFIMAT_CONFIG": str(backend.config),
                               "LOOP_SCENARIO": str(work / "scenario.json")},
            input=(REPO / "tests" / "loop_harness" / "gimp_loop.py").read_text(), timeout=300)
        elapsed = time.monotonic() - started
        rounds = list(backend.engine.rounds)
    result = sandbox.editor_output(out / "result.json", "GIMP", run)
    print(f"GIMP loop session {elapsed:.1f} s; rounds the backend saw: {rounds}")
    print(json.dumps(result, indent=1))
    assert "error" not in result, result["error"] + run.stderr[-3000:]

    def mask(name: str) -> np.ndarray:
        return np.frombuffer((out / name).read_bytes(), np.uint8).reshape(512, 512)

    return {"steps": result["steps"], "mask": mask, "rounds": rounds, "seconds": elapsed, "out": out}


def test_second_round_from_the_keyboard_with_the_stroke_layer_active(loop):
    r1, r2 = loop["steps"]["round1"], loop["steps"]["round2"]
    assert r1["ok"] and r1["has_mask"], r1["message"]
    assert loop["steps"]["painted"]["active"] == ["DFIMat -"]
    # No error and no click back on the photo: the run found the photo layer's session from the stroke layer.
    assert r2["dialog"] and r2["changed"], r2
    assert r2["active"] == ["DFIMat -"] and r2["layers"] == 2
    # The backend saw one box round, then a round with the stroke only, in the same session.
    assert loop["rounds"][0]["box"] and not loop["rounds"][1]["box"]
    assert loop["rounds"][1]["session"] == loop["rounds"][0]["session"] and loop["rounds"][1]["scribbles"] >= 1


def test_the_mask_changed_only_where_the_stroke_asked(loop):
    mask1, mask2 = loop["mask"]("mask1.raw"), loop["mask"]("mask2.raw")
    x0, y0, x1, y1 = BOX
    assert mask1[y0:y1, x0:x1].min() == 255 and mask1.sum() == 255 * (x1 - x0) * (y1 - y0)
    line = _line_mask(MINUS, mask1.shape)
    changed = mask1 != mask2
    # The painted line's core (GIMP's pencil and OpenCV round the line's ends differently) must be cleared.
    assert changed.any() and (mask2[_shrink(line, 2)] == 0).all(), "the '-' stroke must clear the matte under it"
    assert not (changed & ~_grow(line, REACH_PX)).any(), "the mask changed away from the stroke"


def test_one_ctrl_z_takes_the_round_back_and_redo_brings_it(loop):
    undo = loop["steps"]["undo_round2"]
    assert undo["mask1_back"] and undo["stroke_kept"], undo
    assert loop["steps"]["redo_round2"]["mask2_back"]


def test_a_channel_active_continues_the_photo_layers_session(loop):
    s = loop["steps"]["channel_round"]
    assert s["ok"], s["message"]
    mask2, mask3 = loop["mask"]("mask2.raw"), loop["mask"]("mask3.raw")
    line = _line_mask(PLUS, mask2.shape)
    assert (mask3[_shrink(line, 2)] == 255).all()
    assert not ((mask2 != mask3) & ~_grow(line, REACH_PX)).any()


def test_the_matte_view_leaves_the_image_alone(loop):
    s = loop["steps"]["view"]
    assert s["opened"] and s["closed"], (s["open_message"], s["close_message"])
    assert s["views"] == 1 and s["view"]["layers"] == ["photo", "colour"] and not s["view"]["dirty"]
    assert not s["view"]["undo"], "the view image keeps no undo history"
    assert s["view"]["corner_rgba"][:3] == [0.0, 0.0, 0.0], "outside the matte the view shows its colour"
    assert s["images_after"] == s["images_before"]
    assert s["dirty_unchanged"] and s["layers_unchanged"]
