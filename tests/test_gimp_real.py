"""The DFIMat GIMP plug-in in a real GIMP 3.0.4 (Debian 13 root via bubblewrap) against the real backend.

One GIMP session (GUI under Xvfb, driven by tests/editors/gimp_driver.py) does the whole user story on the
committed two-person fixture photo (tests/fixtures/two-people: exact masks, public-domain material): box from a rectangle selection → layer mask, Ctrl+Z, re-run, a "DFIMat -" stroke to
refine, Ctrl+Z of the refinement, a re-run after it with a new stroke (the undone round must not count), selection
output (and a re-run on it), a batch over two layers, paths, 16-bit and
float images, and a backend that refuses the token. The tests below check what it recorded. Run alone with
``pytest -m gimp -rs``. The default model must be committed: without it (and without DFIMAT_GIMP_TEST_WEIGHTS)
the session fails instead of testing a random model.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.editors import sandbox

pytestmark = [pytest.mark.gimp, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "two-people"
DEFAULT_WEIGHTS = REPO / "models" / "dfimat-s" / "dfimat-s.pt"
HOME_CACHE = REPO / ".cache" / "gimp-test-home"
# Canvas padding around the photo layer, so selection (canvas) and mask (layer) coordinates differ.
PAD = (24, 16)
MIN_AREA_FRACTION = 0.05
MAX_OTHERS_IN_BOX = 0.05
# The bound checks that the GIMP round trip hands the model's answer back, not the model's accuracy (the evaluation
# command measures that on real photos; held-out mean 0.739, models/dfimat-s/MODEL_CARD.md). On the fixture's
# person (the left one, clean edges on a plain backdrop) one box gives IoU 0.975 in-process; 0.60 lies well above
# the bare box rectangle (0.55) and fails a mirrored or wrong-person matte. It does not catch a 24/16 px
# layer-offset error on a person this large: offsets are checked exactly instead (selection output vs layer mask
# byte for byte, unit tests).
IOU_THRESHOLD = 0.60
# The refinement must visibly obey the "DFIMat -" stroke: mean alpha under it drops by at least this much.
STROKE_DROP = 0.25
# A click on the person plus a "bg" path across the other person (no box): in GIMP on the fixture IoU 0.973 with
# none of the other person covered (on the COCO photo the test used before: 0.654 and 27 %; a "bg" line above
# everyone there took in both people, 78 % of the other). The matte must beat the bare box rectangle and leave most
# of the other person out.
MAX_OTHER_COVERED = 0.5
MENUS = {
    "plug-in-dfimat-select-person": ("DFIMat Select Person…", ["<Image>/Select"]),
    "plug-in-dfimat-layer-mask": ("DFIMat Select Person…", ["<Image>/Layer/Mask"]),
    "plug-in-dfimat-batch-masks": ("DFIMat Batch Layer Masks…", ["<Image>/Layer/Mask"]),
    "plug-in-dfimat-split-people": ("DFIMat Split People into Layers", ["<Image>/Layer"]),
    "plug-in-dfimat-reset": ("DFIMat Start Over", ["<Image>/Select"]),
}


def pick_person() -> dict:
    """The largest well-separated person (>= 5 % of the photo, others < 5 % of its box) in a multi-person photo."""
    manifest = json.loads((DATA / "manifest.json").read_text())
    best = None
    for item in manifest["items"]:
        if item["persons"] < 2:
            continue
        area = item["width"] * item["height"]
        inst = None
        for k, px in enumerate(item["person_area_px"], start=1):
            if px < MIN_AREA_FRACTION * area or (best and px / area <= best["fraction"]):
                continue
            if inst is None:
                inst = cv2.imread(str(DATA / item["instances"]), cv2.IMREAD_UNCHANGED)
            ys, xs = np.nonzero(inst == k)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            crop = inst[box[1]:box[3], box[0]:box[2]]
            others = float(((crop > 0) & (crop < 255) & (crop != k)).mean())
            if others <= MAX_OTHERS_IN_BOX:
                best = {"id": item["id"], "image": DATA / item["image"], "k": k, "box": box,
                        "fraction": px / area, "gt": inst == k, "ignore": inst == 255, "persons": item["persons"],
                        "others": (inst > 0) & (inst < 255) & (inst != k)}
    if best is None:
        pytest.fail(f"no person in {DATA} fits the test's selection rule")
    return best


# What the dialog's text says: the first expression the backend's referring-expression generator makes for the
# fixture's left person (it singles her out by position).
DESCRIPTIONS = {("two-people", 1): "the person on the left", ("two-people", 2): "the person on the right"}


def describe_person(person: dict) -> str:
    """The sentence that singles the test's person out."""
    return DESCRIPTIONS[(person["id"], person["k"])]


def line_across(mask: np.ndarray) -> list[int]:
    """(row, x0, x1): the middle 60 % of the mask's extent on its median row, where a user draws a "bg" line."""
    ys, _ = np.nonzero(mask)
    if not len(ys):
        pytest.fail("the photo has no other labelled person for the negative path")
    row = int(np.median(ys))
    cols = np.nonzero(mask[row])[0]
    span = int(cols.max() - cols.min())
    return [row, int(cols.min()) + span // 5, int(cols.max()) - span // 5]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(work: Path, weights: Path) -> tuple[subprocess.Popen, str, Path]:
    token = work / "token"
    token.write_text(os.urandom(16).hex() + "\n")
    token.chmod(0o600)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, DFIMAT_WEIGHTS=str(weights), PYTHONPATH=str(REPO))
    with open(work / "backend.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--endpoint", endpoint, "--token-file", str(token),
             "--weights", str(weights)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
        )
    deadline = time.monotonic() + 300
    # select() keeps a backend that hangs while loading from hanging the test too.
    while select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return proc, endpoint, token
        if not line:
            break
    proc.kill()
    proc.wait()
    pytest.fail(f"backend did not start: {(work / 'backend.log').read_text()[-3000:]}")


def prepare_home() -> Path:
    """The cached GIMP HOME (a fresh one costs seconds per start) with the plug-in freshly installed."""
    sys.path.insert(0, str(REPO))
    from install import install_gimp_plugin

    gimp_dir = HOME_CACHE / ".config" / "GIMP" / "3.0"
    install_gimp_plugin(gimp_dir / "plug-ins")
    gimprc = gimp_dir / "gimprc"
    if not gimprc.exists():
        # The first-start welcome dialog would sit on top of the image window that gets Ctrl+Z.
        gimprc.write_text("(show-welcome-dialog no)\n")
    return HOME_CACHE


@pytest.fixture(scope="module")
def gimp_session(tmp_path_factory):
    sandbox.require(sandbox.TRIXIE)
    work = tmp_path_factory.mktemp("gimp-real")
    person = pick_person()
    # DFIMAT_GIMP_TEST_WEIGHTS tries a candidate checkpoint before it is committed.
    candidate = os.environ.get("DFIMAT_GIMP_TEST_WEIGHTS")
    weights = Path(candidate) if candidate else DEFAULT_WEIGHTS
    if candidate and not weights.is_file():
        pytest.fail(f"DFIMAT_GIMP_TEST_WEIGHTS={candidate} does not exist")
    if not weights.is_file():
        # A random model would make every accuracy check meaningless; say so instead of testing one.
        pytest.fail(f"{weights} is missing: commit the default model or set DFIMAT_GIMP_TEST_WEIGHTS")
    h, w = person["gt"].shape
    photo = work / f"{person['id']}{person['image'].suffix}"
    shutil.copyfile(person["image"], photo)
    (work / "gt.raw").write_bytes(person["gt"].astype(np.uint8).tobytes())
    out = work / "out"
    out.mkdir()
    backend, endpoint, token = start_backend(work, weights)
    try:
        (work / "config.json").write_text(json.dumps(
            {"schema": 1, "endpoint": endpoint, "token_file": str(token), "backend_command": [], "device": "cpu"}
        ))
        scenario = {"photo": str(photo), "gt": str(work / "gt.raw"), "box": list(person["box"]),
                    "pad": list(PAD), "out": str(out), "other_line": line_across(person["others"]),
                    "text": describe_person(person)}
        (work / "scenario.json").write_text(json.dumps(scenario))
        HOME_CACHE.mkdir(parents=True, exist_ok=True)
        with open(HOME_CACHE.parent / "gimp-test-home.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            home = prepare_home()
            start = time.monotonic()
            run = sandbox.TRIXIE.run_in_root(
                [*sandbox.xvfb_run(), "gimp-3.0", "--no-splash",
                 "--batch-interpreter=python-fu-eval", "-b", "-", "--quit"],
                binds=[work, home],
                env={"HOME": str(home), "DFIMAT_CONFIG": str(work / "config.json"),
                     "DFIMAT_SCENARIO": str(work / "scenario.json")},
                input=(REPO / "tests" / "editors" / "gimp_driver.py").read_text(),
                timeout=900,
            )
            elapsed = time.monotonic() - start
    finally:
        backend.terminate()
        try:
            backend.wait(30)
        except subprocess.TimeoutExpired:
            backend.kill()
    result = sandbox.editor_output(out / "result.json", "GIMP", run)
    steps = {s["step"]: s for s in result["steps"]}

    def mask(name: str) -> np.ndarray | None:
        f = out / name
        return np.frombuffer(f.read_bytes(), np.uint8).reshape(h, w) if f.exists() else None

    print(f"GIMP session: {elapsed:.1f} s, weights {weights.name}, photo {person['id']} person {person['k']} "
          f"({person['fraction']:.1%} of the photo, {person['persons']} people), box {person['box']}")
    for s in result["steps"]:
        print("  ", json.dumps(s))
    return {"result": result, "steps": steps, "mask": mask, "person": person, "weights": weights,
            "log": run.stderr[-4000:] + (work / "backend.log").read_text()[-3000:]}


def test_root_runs_commands_with_a_clean_environment_and_binds(tmp_path, monkeypatch):
    sandbox.require(sandbox.TRIXIE)
    (tmp_path / "hello.txt").write_text("from the host")
    monkeypatch.setenv("PYTHONPATH", "/leaks/if/seen")
    run = sandbox.TRIXIE.run_in_root(["sh", "-c", f"cat {tmp_path}/hello.txt; echo; env; cat /etc/debian_version"],
                               binds=[tmp_path], env={"MARK": "1"}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("from the host")
    assert "MARK=1" in run.stdout and "PYTHONPATH" not in run.stdout
    assert run.stdout.strip().splitlines()[-1].startswith("13")


def iou(alpha: np.ndarray, person: dict) -> float:
    pred = alpha >= 128
    valid = ~person["ignore"]
    gt = person["gt"]
    return float((pred & gt & valid).sum() / max(1, ((pred | gt) & valid).sum()))


def step(session: dict, name: str) -> dict:
    steps = session["steps"]
    assert name in steps, f"GIMP did not reach step {name!r}: {session['result'].get('error')}\n{session['log']}"
    return steps[name]


def test_procedures_are_registered_under_their_menu_names(gimp_session):
    s = step(gimp_session, "registered")
    assert set(MENUS) <= set(s["procedures"])
    assert s["offsets"] == list(PAD)
    # The "Select → DFIMat Select Person (and the same under Layer for masks)".
    for name, (label, paths) in MENUS.items():
        assert (s["menus"][name]["label"], s["menus"][name]["paths"]) == (label, paths), name


def test_wrong_token_is_a_clear_error_and_changes_nothing(gimp_session):
    s = step(gimp_session, "wrong_token")
    assert not s["ok"]
    assert "token" in s["message"] and "install.py" in s["message"], s["message"]
    assert not s["dirty"] and not s["has_mask"] and s["layers"] == 1 and not s["parasite"]
    x0, y0, x1, y1 = gimp_session["person"]["box"]
    assert s["bounds"] == [x0 + PAD[0], y0 + PAD[1], x1 + PAD[0], y1 + PAD[1]]


def test_empty_prompt_is_a_clear_error_and_changes_nothing(gimp_session):
    s = step(gimp_session, "empty_prompt")
    assert not s["ok"]
    assert "rectangle selection" in s["message"] and "DFIMat +" in s["message"]
    assert not s["has_mask"] and s["layers"] == 1 and not s["dirty"]


def test_box_run_writes_a_layer_mask_and_one_undo_removes_it(gimp_session):
    s = step(gimp_session, "box_run")
    assert s["ok"], s["message"]
    assert s["mask_shape"] == list(gimp_session["person"]["gt"].shape)
    assert step(gimp_session, "undo_box_run")["mask_removed"]
    rerun = step(gimp_session, "rerun")
    assert rerun["ok"] and rerun["has_mask"], rerun["message"]


def test_refinement_run_is_one_undo_step(gimp_session):
    s = step(gimp_session, "refine_run")
    assert s["ok"], s["message"]
    assert gimp_session["mask"]("mask2.raw") is not None
    assert step(gimp_session, "undo_refine")["equals_before"], "one Ctrl+Z did not restore the pre-refinement mask"


def test_rerun_after_undo_starts_from_what_the_image_shows(gimp_session):
    s = step(gimp_session, "rerun_after_undo")
    assert s["ok"], s["message"]
    person = gimp_session["person"]
    undone, fresh = gimp_session["mask"]("undone_rerun.raw"), gimp_session["mask"]("fresh_rerun.raw")
    assert undone is not None and fresh is not None
    # Same prompts (box + the new stroke) in a fresh session: the undone refinement no longer counts.
    def agree(x: np.ndarray, y: np.ndarray) -> float:
        return float(((x >= 128) & (y >= 128)).sum() / max(1, ((x >= 128) | (y >= 128)).sum()))

    print(f"re-run after undo vs a fresh session: IoU {agree(undone, fresh):.4f}, identical "
          f"{np.array_equal(undone, fresh)}; IoU with the person {iou(undone, person):.3f}")
    assert agree(undone, fresh) > 0.98


def test_selection_output_matches_the_mask(gimp_session):
    s = step(gimp_session, "selection_run")
    assert s["ok"], s["message"]
    sel, before = gimp_session["mask"]("selection.raw"), gimp_session["mask"]("mask1b.raw")
    assert sel is not None and sel.max() > 0
    # Same box, nothing new: the session restarts from the box, and the selection is that matte in canvas
    # coordinates (shifted by the layer offset), byte for byte.
    assert np.array_equal(sel, before)


def test_one_undo_takes_back_the_selection_output(gimp_session):
    s = step(gimp_session, "undo_selection")
    assert s["box_back"], f"after Ctrl+Z the selection bounds are {s['bounds']}, not the rectangle again"


def test_dialog_ok_runs_with_its_defaults(gimp_session):
    s = step(gimp_session, "dialog_run")
    assert s["ok"], s
    dialog_sel, sel = gimp_session["mask"]("dialog_selection.raw"), gimp_session["mask"]("selection.raw")
    assert dialog_sel is not None and np.array_equal(dialog_sel, sel)


def test_rerun_on_the_written_selection_keeps_the_users_box(gimp_session):
    s = step(gimp_session, "reselect_run")
    assert s["ok"], s["message"]
    assert s["bounds_before"] != s["box"], "the selection written by the dialog run should be the matte, not the box"
    # The matte's bounds are not a new box: nothing is new, the session restarts from the stored box. (Here faint
    # alpha reaches the layer's edges, so the bounds are the whole layer: read as a selection they would mean "no
    # box" and leave no prompt at all; a tighter matte would give a wrong new box.)
    again, before = gimp_session["mask"]("reselect.raw"), gimp_session["mask"]("dialog_selection.raw")
    assert again is not None and np.array_equal(again, before)


def test_batch_over_two_layers_writes_two_masks(gimp_session):
    s = step(gimp_session, "batch_run")
    assert s["ok"], s["message"]
    assert s["masks"] == [True, True]
    a, b = gimp_session["mask"]("batch_a.raw"), gimp_session["mask"]("batch_b.raw")
    assert a is not None and b is not None and a.max() > 0
    assert np.array_equal(a, b), "identical layers with one prompt must get identical masks"


def test_split_people_adds_masked_layers_and_reset_forgets_the_session(gimp_session):
    s = step(gimp_session, "split_run")
    assert s["ok"], s["message"]
    assert s["added"] >= 1 and s["masked"] == s["added"]
    r = step(gimp_session, "reset_run")
    assert r["ok"] and not r["state_left"], r["message"]


def precision_run(gimp_session, name: str, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """The matte of the step ``name`` (run at ``precision``) and the 8-bit run's matte."""
    s = step(gimp_session, f"{name}_run")
    assert s["ok"], s["message"]
    assert precision in s["precision"]
    return gimp_session["mask"](f"{name}.raw"), gimp_session["mask"]("mask1b.raw")


def test_16_bit_integer_image_gets_the_same_mask(gimp_session):
    as_u16, as_u8 = precision_run(gimp_session, "u16", "U16_NON_LINEAR")
    # 8-bit → 16-bit non-linear → 8-bit gives the very same pixels back, hence the same matte; writing the "Y u8"
    # matte into a 16-bit mask and reading it back may round by one level at most.
    assert as_u16 is not None
    assert np.abs(as_u16.astype(int) - as_u8.astype(int)).max() <= 1


def test_float_precision_image_gets_the_same_mask(gimp_session):
    as_float, as_u8 = precision_run(gimp_session, "float", "FLOAT_LINEAR")
    # GEGL's float → 8-bit conversion may move an input value by one level, which may move the matte a little
    # (a whole 3000-pixel boundary flipping costs about 1 level on average here), never a lot.
    assert as_float is not None
    assert np.abs(as_float.astype(int) - as_u8.astype(int)).mean() < 4


def test_path_click_and_negative_path_work_without_a_selection(gimp_session):
    s = step(gimp_session, "paths_run")
    assert s["ok"], s["message"]
    m = gimp_session["mask"]("paths.raw")
    assert m is not None and m.shape == gimp_session["person"]["gt"].shape


def test_paths_matte_is_on_the_person(gimp_session):
    """Accuracy: a click plus a negative path select this person, not the other one (committed weights)."""
    person = gimp_session["person"]
    m = gimp_session["mask"]("paths.raw")
    assert m is not None
    x0, y0, x1, y1 = person["box"]
    bare = np.zeros_like(m)
    bare[y0:y1, x0:x1] = 255
    score, floor = iou(m, person), iou(bare, person)
    others = person["others"]
    covered = float(((m >= 128) & others).sum() / max(1, others.sum()))
    print(f"IoU from paths in GIMP: {score:.3f} (bare box {floor:.3f}); other person covered {covered:.1%}")
    assert score >= floor, f"paths IoU {score:.3f} below the bare box rectangle's {floor:.3f}"
    assert covered <= MAX_OTHER_COVERED


def test_grayscale_image_gets_a_mask(gimp_session):
    s = step(gimp_session, "gray_run")
    assert s["ok"], s["message"]
    assert "GRAY" in s["base"]
    assert gimp_session["mask"]("gray.raw") is not None


def test_box_mask_matches_the_person(gimp_session):
    """Accuracy: expected to pass with the committed DFIMat-S weights only (a tiny random model fails it)."""
    person = gimp_session["person"]
    first = gimp_session["mask"]("mask1.raw")
    assert first is not None
    score = iou(first, person)
    print(f"IoU after one box in GIMP: {score:.3f} (weights {gimp_session['weights']})")
    assert score >= IOU_THRESHOLD, f"IoU {score:.3f} < {IOU_THRESHOLD} with weights {gimp_session['weights']}"
    batch = gimp_session["mask"]("batch_a.raw")
    assert batch is not None and iou(batch, person) >= IOU_THRESHOLD


def test_negative_stroke_removes_alpha_under_it(gimp_session):
    """Accuracy: the refinement obeys the "DFIMat -" stroke (committed weights only)."""
    stroke = step(gimp_session, "refine_run")["stroke"]
    before, after = gimp_session["mask"]("mask1b.raw"), gimp_session["mask"]("mask2.raw")
    assert before is not None and after is not None
    half = max(1, stroke["width"] // 2)
    rows = slice(max(0, stroke["row"] - half), stroke["row"] + half + 1)
    cols = slice(stroke["x0"], stroke["x1"] + 1)
    drop = (before[rows, cols].mean() - after[rows, cols].mean()) / 255.0
    print(f"mean alpha under the '-' stroke: {before[rows, cols].mean() / 255:.3f} → "
          f"{after[rows, cols].mean() / 255:.3f}")
    assert drop >= STROKE_DROP
    # Far from the stroke the matte stays put: refinement is local, not a new guess.
    far = np.ones_like(before, bool)
    far[max(0, stroke["row"] - 60):stroke["row"] + 60, max(0, stroke["x0"] - 60):stroke["x1"] + 60] = False
    assert np.abs(before[far].astype(int) - after[far].astype(int)).mean() < 0.05 * 255


def test_text_alone_selects_the_described_person(gimp_session):
    """Accuracy: the dialog's text with no selection and no paths picks the person it describes (the backend finds
    the people and matches the words to them; committed weights). In GIMP on the fixture: IoU 0.976 with the
    described person, none of the other covered; the other person's coverage bound is the paths test's."""
    s = step(gimp_session, "text_run")
    assert s["ok"], s["message"]
    person = gimp_session["person"]
    m = gimp_session["mask"]("text.raw")
    assert m is not None
    score = iou(m, person)
    covered = float(((m >= 128) & person["others"]).sum() / max(1, person["others"].sum()))
    print(f"text {s['text']!r} in GIMP: IoU {score:.3f}, other person covered {covered:.1%}")
    assert score >= IOU_THRESHOLD and covered <= MAX_OTHER_COVERED
