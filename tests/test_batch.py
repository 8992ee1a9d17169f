"""The batch job without Ray (backend/serving/batch.py): index, resume, atomic writes, corrupt images, Ctrl-C.

The tiny random checkpoint and a fake people finder keep these fast; the real finder runs in tests/test_cli.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.serving import batch
from backend.serving.batch import BatchOptions, Job, run_local
from tests.test_cli import ENV
from tests.test_server_fixtures import REPO

# The rules that run mediapipe in every round would dominate a plumbing test's time.
FAST = {"DFIMAT_POSE_PRIOR": "0", "DFIMAT_TAKE_OUT_OTHERS": "0"}


def two_people(image: np.ndarray) -> list[list[float]]:
    """Stand-in finder: the left and right halves are one person each."""
    h, w = image.shape[:2]
    return [[2.0, 2.0, w / 2, h - 2.0], [w / 2, 2.0, w - 2.0, h - 2.0]]


def make_photos(folder: Path, sizes: list[int], corrupt: bool = False) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    astronaut = cv2.imread(str(REPO / "samples" / "astronaut.png"))
    names = []
    for i, side in enumerate(sizes):
        name = f"photo{i:02d}.png"
        cv2.imwrite(str(folder / name), cv2.resize(astronaut, (side, side * 3 // 4)))
        names.append(name)
    if corrupt:
        good = (folder / names[0]).read_bytes()
        (folder / "broken.png").write_bytes(good[: len(good) // 3])  # a truncated download
        names.append("broken.png")
    return sorted(names)


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from backend.dfimat.model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("batchw") / "tiny.pt")


@pytest.fixture
def fast(monkeypatch):
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)


def test_local_batch_writes_index_with_hashes_and_reports_a_corrupt_image(tmp_path, weights, fast, capsys):
    names = make_photos(tmp_path / "in", [96, 120], corrupt=True)
    options = BatchOptions(tmp_path / "in", tmp_path / "out", text="", weights=str(weights))
    assert run_local(options, detector=two_people) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [e["image"] for e in index] == names
    by_name = {e["image"]: e for e in index}
    assert "not an image or damaged" in by_name["broken.png"]["error"] and by_name["broken.png"]["masks"] == []
    for name in ("photo00.png", "photo01.png"):
        e = by_name[name]
        assert "error" not in e and e["size"] == (tmp_path / "in" / name).stat().st_size
        assert [m["file"] for m in e["masks"]] == [f"{name[:-4]}_person00.png", f"{name[:-4]}_person01.png"]
        for m in e["masks"]:
            assert (tmp_path / "out" / m["file"]).stat().st_size == m["size"]
    out = capsys.readouterr()
    assert "wrote 4 mattes for 3 images" in out.out and "1 failed: broken.png" in out.out
    assert "3/3 images, 4 people" in out.err
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]


def test_rerun_resumes_and_redoes_what_changed(tmp_path, weights, fast, capsys, monkeypatch):
    make_photos(tmp_path / "in", [96, 100, 104])
    options = BatchOptions(tmp_path / "in", tmp_path / "out", text="", weights=str(weights))
    assert run_local(options, detector=two_people) == 0
    first = outputs(tmp_path / "out")
    capsys.readouterr()
    calls: list[tuple[int, int]] = []

    def counting(image: np.ndarray) -> list[list[float]]:
        calls.append(image.shape[:2])
        return two_people(image)

    assert run_local(options, detector=counting) == 0
    assert calls == [] and "3 resumed" in capsys.readouterr().out
    assert outputs(tmp_path / "out") == first
    # A changed source, a deleted mask and a mask cut short are each found and only those images done again.
    photo = cv2.imread(str(tmp_path / "in" / "photo00.png"))
    cv2.imwrite(str(tmp_path / "in" / "photo00.png"), 255 - photo)
    (tmp_path / "out" / "photo01_person01.png").unlink()
    (tmp_path / "out" / "photo02_person00.png").write_bytes(b"\x89PNG")
    assert run_local(options, detector=counting) == 0
    assert len(calls) == 3
    after = outputs(tmp_path / "out")
    assert after["photo01_person01.png"] == first["photo01_person01.png"]
    assert after["photo02_person00.png"] == first["photo02_person00.png"]
    # Other engine settings are another job: nothing is resumed.
    calls.clear()
    monkeypatch.setenv("DFIMAT_FOCUS", "0")
    assert run_local(options, detector=counting) == 0
    assert len(calls) == 3


def test_fewer_people_on_a_rerun_removes_the_extra_masks(tmp_path, weights, fast):
    make_photos(tmp_path / "in", [96])
    options = BatchOptions(tmp_path / "in", tmp_path / "out", text="", weights=str(weights))
    assert run_local(options, detector=two_people) == 0
    (tmp_path / "out" / "index.json").unlink()
    assert run_local(options, detector=lambda image: two_people(image)[:1]) == 0
    assert sorted(outputs(tmp_path / "out")) == ["index.json", "photo00_person00.png"]


def test_images_whose_masks_would_share_names_are_reported(tmp_path, weights, fast, capsys):
    make_photos(tmp_path / "in", [96])
    (tmp_path / "in" / "photo00.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((40, 50, 3), np.uint8))[1])
    options = BatchOptions(tmp_path / "in", tmp_path / "out", text="", weights=str(weights))
    assert run_local(options, detector=two_people) == 0
    index = {e["image"]: e for e in json.loads((tmp_path / "out" / "index.json").read_text())}
    assert "would overwrite those of photo00.jpg" in index["photo00.png"]["error"]
    assert len(index["photo00.jpg"]["masks"]) == 2


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(batch.os, "replace", broken_replace)
    with pytest.raises(OSError):
        batch.atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.png"]


def test_leftover_part_files_of_a_killed_run_are_removed(tmp_path, weights, fast):
    make_photos(tmp_path / "in", [96])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".photo00_person00.png.0123abcd.part").write_bytes(b"half")
    (tmp_path / "out" / "notes.part").write_bytes(b"the user's")
    assert run_local(BatchOptions(tmp_path / "in", tmp_path / "out", text="", weights=str(weights)),
                     detector=two_people) == 0
    assert not (tmp_path / "out" / ".photo00_person00.png.0123abcd.part").exists()
    assert (tmp_path / "out" / "notes.part").exists()


def test_interrupt_records_what_is_finished_and_the_rerun_completes(tmp_path, weights, fast, monkeypatch, capsys):
    make_photos(tmp_path / "in", [96, 100, 104, 108])
    options = BatchOptions(tmp_path / "in", tmp_path / "out", text="", weights=str(weights))
    record = Job.record

    def record_then_ctrl_c(self, entry):
        record(self, entry)
        if len(self.entries) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Job, "record", record_then_ctrl_c)
    assert run_local(options, detector=two_people) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "out" / "index.json").read_text())) == 2
    monkeypatch.setattr(Job, "record", record)
    assert run_local(options, detector=two_people) == 0
    assert "2 resumed" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "out" / "index.json").read_text())) == 4


def test_ctrl_c_on_the_command_line_stops_cleanly_and_the_rerun_resumes(tmp_path, weights):
    make_photos(tmp_path / "in", [160, 170, 180, 190, 200, 210])
    cmd = [sys.executable, "-m", "backend", "batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
           "--text", "", "--weights", str(weights)]
    env = ENV | FAST
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        for line in proc.stderr:
            if "1/6 images" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode == 0:
        pytest.skip("the job finished before the signal arrived")  # a fast machine; nothing to resume then
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "run the same command again to resume" in err
    finished = len(json.loads((tmp_path / "out" / "index.json").read_text()))
    assert 1 <= finished < 6
    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{finished} resumed" in rerun.stdout
    assert len(json.loads((tmp_path / "out" / "index.json").read_text())) == 6


def test_ray_options_without_ray_mode_are_refused(tmp_path, weights):
    make_photos(tmp_path / "in", [96])
    run = subprocess.run([sys.executable, "-m", "backend", "batch", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                          "--workers", "2", "--weights", str(weights)], capture_output=True, text=True, cwd=REPO,
                         env=ENV, timeout=60)
    assert run.returncode == 2 and run.stderr.strip() == "error: --workers and --gpus-per-worker need --ray"


def test_ray_mode_without_ray_is_one_line_saying_how_to_get_it(tmp_path, weights):
    make_photos(tmp_path / "in", [96])
    # A stand-in 'ray' that fails to import, as on an install without the extra.
    (tmp_path / "noray" / "ray").mkdir(parents=True)
    (tmp_path / "noray" / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = ENV | {"PYTHONPATH": f"{tmp_path / 'noray'}{os.pathsep}{REPO}"}
    run = subprocess.run([sys.executable, "-m", "backend", "batch", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                          "--ray", "--weights", str(weights)], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --ray needs Ray") and 'pip install "dfimat[ray]"' in lines[0]


def test_an_image_that_fails_keeps_no_masks_from_an_earlier_run(tmp_path, weights, fast, monkeypatch):
    make_photos(tmp_path / "in", [96])
    options = BatchOptions(tmp_path / "in", tmp_path / "out", text="", weights=str(weights))
    assert run_local(options, detector=two_people) == 0

    def broken(image: np.ndarray) -> list[list[float]]:
        raise RuntimeError("the finder crashed")

    monkeypatch.setenv("DFIMAT_FOCUS", "0")  # other settings, so the image is done again
    assert run_local(options, detector=broken) == 1
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index[0]["error"] == "RuntimeError: the finder crashed" and index[0]["masks"] == []
    assert sorted(outputs(tmp_path / "out")) == ["index.json"]
