"""Helpers for the real-Krita tests (run in the dev venv): the real backend and the photo case.

Krita itself runs from the sandbox roots of tests/editors/sandbox.py (5.1 from Debian 12, 5.2 from Debian 13).
The photo: the committed fixture ``tests/fixtures/two-people`` (two people with exact masks, public-domain
material; tests/fixtures/README.md), person 2 (the one on the right, 11 % of the image). "Fill the selection box"
scores IoU 0.55 against it, so the model must do clearly better than the box to pass (see ``IOU_MIN``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent
DATA = REPO / "tests" / "fixtures" / "two-people"
CACHE = REPO / ".cache"
IMAGE_ID, PERSON = "two-people", 2
# What the docker's text field says to select PERSON: the first expression backend's referring-expression generator
# makes for this person on the fixture (it singles her out by position).
PERSON_TEXT = "the person on the right"
# The round trip (selection -> box, BGRA order, mask written back), not the model's accuracy, is under test here:
# the committed DFIMat-S scores 0.975 on this person in-process, the bare box 0.55; a shifted, mirrored or
# wrong-person mask scores far lower. 0.60 fails all of those.
IOU_MIN = 0.60
# The "DFIMat -" stroke must lower the alpha under it clearly (the committed model: 1.00 -> 0.70) while the rest of
# the person barely moves (checked separately); an ignored stroke changes it by ~0.
STROKE_DROP = 0.2
# "Split people" starts from MediaPipe's detected boxes (padded, loose at the head), not the user's. What the
# plug-in must get right is one layer per person, each on its own person: every labelled person needs its own best
# layer, overlapping that person clearly (IoU >= 0.45) and the other person barely (IoU <= 0.15; a layer on the
# wrong person scores ~0 there). 0.45 rather than the instance-matting convention's 0.5: the detector's box, not
# the plug-in, sets how close to 0.5 a person lands (over all 131 held-out people of the shared evaluation sets the
# best split layer averages IoU 0.41, detector recall being the limit; docs/krita.md).
SPLIT_IOU_MIN = 0.45
SPLIT_OTHER_MAX = 0.15
REAL_WEIGHTS = REPO / "models" / "dfimat-s" / "dfimat-s.pt"


@dataclass
class Case:
    image: Path
    gt: np.ndarray  # bool H x W, the chosen person
    box: tuple[int, int, int, int]  # x, y, w, h
    stroke: np.ndarray  # uint8 H x W, the "DFIMat -" paint

    @property
    def box_iou(self) -> float:
        x, y, w, h = self.box
        filled = np.zeros_like(self.gt)
        filled[y:y + h, x:x + w] = True
        return iou(filled, self.gt)


def photo_case() -> Case:
    manifest = json.loads((DATA / "manifest.json").read_text())
    item = next(i for i in manifest["items"] if i["id"] == IMAGE_ID)
    inst = np.array(Image.open(DATA / item["instances"]))
    gt = inst == PERSON
    ys, xs = np.nonzero(gt)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    # The negative stroke: a band across the lower third of the person, painted only on the person, so after the
    # refinement the alpha there must drop while the rest of the person stays.
    band = np.zeros_like(gt)
    top = y0 + int(0.70 * (y1 - y0))
    band[top:top + max(8, (y1 - y0) // 20), :] = True
    stroke = (band & gt).astype(np.uint8) * 255
    return Case(DATA / item["image"], gt, (int(x0), int(y0), int(x1 - x0), int(y1 - y0)), stroke)


def text_for_person() -> str:
    """The sentence that describes PERSON on the fixture (PERSON_TEXT)."""
    return PERSON_TEXT


def check_text(out_dir: Path, case: Case) -> float:
    """The docker's text alone picked the described person: IoU >= IOU_MIN with it, <= SPLIT_OTHER_MAX with the other
    (in-process on this photo: 0.975 and 0.0)."""
    report = json.loads((out_dir / "report.json").read_text())
    assert report["ok"], report.get("error")
    assert report["text_selection"] is None, "the text run must have had no selection"
    h, w = case.gt.shape
    alpha = read_alpha(out_dir, "text.raw", (h, w)) >= 128
    inst = np.array(Image.open(DATA / "instances" / f"{IMAGE_ID}.png"))
    other = (inst > 0) & (inst < 255) & (inst != PERSON)
    own, theirs = iou(alpha, case.gt), iou(alpha, other)
    print(f"text alone in Krita: IoU {own:.3f} with the described person, {theirs:.3f} with the other")
    assert own >= IOU_MIN and theirs <= SPLIT_OTHER_MAX, (own, theirs)
    return own


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Backend:
    process: subprocess.Popen
    config: Path
    endpoint: str
    weights: Path
    real_weights: bool

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_backend(workdir: Path, timeout: float = 300.0) -> Backend:
    """The real ``python -m backend serve`` on a free loopback port, with a config + token for the plug-in."""
    from dfimat_client.config import write_token
    from dfimat_client.protocol import new_token

    if REAL_WEIGHTS.is_file():
        weights, real = REAL_WEIGHTS, True
    else:
        from backend.dfimat.model import build_tiny_checkpoint

        weights, real = build_tiny_checkpoint(workdir / "tiny.pt"), False
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    token = write_token(workdir / "token", new_token())
    command = [sys.executable, "-m", "backend", "serve", "--endpoint", endpoint, "--token-file", str(token),
               "--weights", str(weights)]
    config = workdir / "config.json"
    config.write_text(json.dumps({"schema": 1, "endpoint": endpoint, "token_file": str(token),
                                  "backend_command": command, "device": "cpu", "version": "0.1.0"}))
    env = dict(os.environ, PYTHONPATH=str(REPO), DFIMAT_CONFIG=str(config))
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if line.startswith("READY"):
            # Keep draining the pipe so a chatty backend never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return Backend(proc, config, endpoint, Path(weights), real)
    proc.kill()
    raise RuntimeError("backend did not print READY:\n" + "".join(lines[-40:]))


# Drawn on a "DFIMat -" vector layer in the GUI test: a small circle (-> a click at its centre) and a polyline
# (-> a scribble over its extent), both on the backdrop. Krita reads SVG user units as points; the photo is 72 dpi,
# so points == pixels.
SHAPES_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="720pt" height="420pt" viewBox="0 0 720 420">'
              '<circle cx="100" cy="120" r="4" fill="#ff0000"/>'
              '<path d="M 300 100 L 350 150 L 400 120" stroke="#ff0000" stroke-width="3" fill="none"/></svg>')


def write_params(out_dir: Path, case: Case, **extra) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stroke = out_dir / "stroke.raw"
    stroke.write_bytes(case.stroke.tobytes())
    params = {"image": str(case.image), "box": list(case.box), "stroke": str(stroke), "output": "mask",
              "out_dir": str(out_dir), **extra}
    path = out_dir / "params.json"
    path.write_text(json.dumps(params))
    return path


def read_alpha(out_dir: Path, name: str, shape: tuple[int, int]) -> np.ndarray:
    return np.frombuffer((out_dir / name).read_bytes(), dtype=np.uint8).reshape(shape)


def check_roundtrip(out_dir: Path, case: Case, real_weights: bool) -> dict:
    """The assertions shared by every real-Krita round trip; returns the measured numbers."""
    report = json.loads((out_dir / "report.json").read_text())
    assert report["ok"], report.get("error")
    h, w = case.gt.shape
    assert report["size"] == [w, h]
    alpha1 = read_alpha(out_dir, "alpha1.raw", (h, w))
    alpha2 = read_alpha(out_dir, "alpha2.raw", (h, w))
    stroke = case.stroke > 0
    rest = case.gt & ~_dilate(stroke, 25)
    numbers = {
        "krita": report["krita"], "mask_type": report["mask_type"],
        "iou": round(iou(alpha1 >= 128, case.gt), 3), "box_iou": round(case.box_iou, 3),
        "stroke_alpha_before": round(float(alpha1[stroke].mean()) / 255, 3),
        "stroke_alpha_after": round(float(alpha2[stroke].mean()) / 255, 3),
        "rest_change": round(float(np.abs(alpha2[rest].astype(int) - alpha1[rest]).mean()) / 255, 3),
        "select_s": report.get("select_s"), "refine_s": report.get("refine_s"),
        "max_poll_tick_s": report.get("max_poll_tick_s"), "write_tick_s": report.get("write_tick_s"),
        "max_gui_stall_s": max(report.get("select_max_gui_stall_s", 0), report.get("refine_max_gui_stall_s", 0)),
        "write_stall_s": max(report.get("select_write_stall_s", 0), report.get("refine_write_stall_s", 0)),
        "undo_steps": report.get("undo_steps"),
        "real_weights": real_weights,
    }
    print("krita round trip:", json.dumps(numbers))
    # Plumbing: the result landed as a mask on the layer, Krita's projection follows it, and taking the added node
    # away (what undo does) restores the document exactly.
    assert report["restored_structure"] and report["restored_pixels"], report
    if "max_poll_tick_s" in report:
        assert report["max_poll_tick_s"] < 0.1, "the GUI-thread pump waited on the backend"
    assert not np.array_equal(alpha1, alpha2), "the refinement round changed nothing"
    # Quality (meaningful with the committed DFIMat-S weights only; random tiny weights fail here on purpose).
    assert numbers["iou"] >= IOU_MIN, f"mask IoU {numbers['iou']} < {IOU_MIN} (box alone: {numbers['box_iou']})"
    assert numbers["stroke_alpha_after"] <= numbers["stroke_alpha_before"] - STROKE_DROP, numbers
    assert numbers["rest_change"] < 0.5 * (numbers["stroke_alpha_before"] - numbers["stroke_alpha_after"]), numbers
    return numbers


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def prepare_gui_home(home: Path, pykrita_src: Path | None = None) -> Path:
    """A HOME whose Krita loads the DFIMat plug-in and the ``kth`` harness plug-in (both enabled in kritarc)."""
    from installer.plugins import install_krita_plugin, set_kritarc_key

    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    kritarc = home / ".config" / "kritarc"
    kritarc.parent.mkdir(parents=True, exist_ok=True)
    install_krita_plugin(pykrita, kritarc)
    harness = HARNESS / "pykrita"
    shutil.copy2(harness / "kth.desktop", pykrita / "kth.desktop")
    shutil.copytree(harness / "kth", pykrita / "kth", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    set_kritarc_key(kritarc, "python", "enable_kth", "true")
    return pykrita


def gui_env(home: Path, params: Path, config: Path, out: Path) -> dict[str, str]:
    return {"HOME": str(home), "KTH_MODULE": "gui_roundtrip", "KTH_OUT": str(out), "KTH_PARAMS": str(params),
            "DFIMAT_CONFIG": str(config), "PYTHONPATH": str(HARNESS), "KTH_WATCHDOG_S": "600"}


def check_split(out_dir: Path, case: Case) -> list[float]:
    """"Split people into layers" on the two-person photo: asserts that each labelled person has its own layer,
    on that person and not on the other (bounds above); returns the best IoU per person."""
    report = json.loads((out_dir / "report.json").read_text())
    layers = report.get("split_layers") or []
    assert layers, f"no person layers: {report.get('split_message')}"
    h, w = case.gt.shape
    alphas = [read_alpha(out_dir, f"person{i}.raw", (h, w)) >= 128 for i in range(len(layers))]
    inst = np.array(Image.open(DATA / "instances" / f"{IMAGE_ID}.png"))
    people = (inst == 1, inst == 2)
    table = [[iou(a, person) for person in people] for a in alphas]  # layer x person
    chosen = [max(range(len(alphas)), key=lambda k, j=j: table[k][j]) for j in range(2)]
    best = [table[chosen[j]][j] for j in range(2)]
    print("split people:", layers, "best IoU per person:", [round(b, 3) for b in best],
          "their IoU with the other person:", [round(table[chosen[j]][1 - j], 3) for j in range(2)])
    assert chosen[0] != chosen[1], f"one layer is the best for both people: {table}"
    for j in range(2):
        assert best[j] >= SPLIT_IOU_MIN and table[chosen[j]][1 - j] <= SPLIT_OTHER_MAX, table
    return best
