"""``python -m backend serve|matte|batch`` as real processes, and the launcher's READY / parent-death handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfimat_client import BackendNotRunning, Client
from dfimat_client.config import write_token
from dfimat_client.launcher import is_running
from tests.test_server_fixtures import REPO, TOKEN, free_tcp_endpoint, rgb_image

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(REPO),
                                                                      "OMP_NUM_THREADS": "1"}
SERVE = [sys.executable, "-m", "backend", "serve"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from backend.dfimat.model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("cliw") / "tiny.pt")


@pytest.fixture
def token_file(tmp_path) -> Path:
    return write_token(tmp_path / "token", TOKEN)


def start_serve(endpoint: str, token_file: Path, weights: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--endpoint", endpoint, "--token-file",
                             str(token_file), "--weights", str(weights), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()  # never leave a backend behind when the test fails here
        pytest.fail(f"no READY line: {line!r} {proc.communicate(timeout=30)[1][-2000:]}")
    return proc, line.split()[1]


def test_serve_prints_ready_answers_and_stops_cleanly_on_sigterm(tmp_path, token_file, weights):
    proc, endpoint = start_serve(f"ipc://{tmp_path / 'b.sock'}", token_file, weights)
    try:
        with Client(endpoint, TOKEN, timeout=10) as c:
            assert c.hello()["protocol"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not (tmp_path / "b.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_stops_cleanly_on_sigint(tmp_path, token_file, weights):
    proc, endpoint = start_serve(f"ipc://{tmp_path / 'i.sock'}", token_file, weights)
    try:
        with Client(endpoint, TOKEN, timeout=10) as c:
            sid = c.open_image(rgb_image(32, 24), 32, 24, 3)
            c.predict(sid, {"box": [2, 2, 20, 20]})
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        stderr = proc.stderr.read()
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
        assert not (tmp_path / "i.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_signal_while_the_model_loads_ends_the_backend_cleanly(tmp_path, token_file, weights):
    proc = subprocess.Popen([*SERVE, "--endpoint", f"ipc://{tmp_path / 's.sock'}", "--token-file",
                             str(token_file), "--weights", str(weights), "-v"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    try:
        # The handlers are in place once the model starts loading, which the verbose log announces.
        for line in proc.stderr:
            if "loading the model" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("args, message", [
    (["--device", "foo"], "invalid choice: 'foo'"),
    (["--weights", "{tmp}/missing.pt"], "error: cannot load the model: DFIMat-S weights not found"),
])
def test_serve_reports_an_unusable_device_or_model_in_one_line(tmp_path, token_file, weights, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--weights" not in args:
        args += ["--weights", str(weights)]
    out = subprocess.run([*SERVE, "--endpoint", f"ipc://{tmp_path / 'x.sock'}", "--token-file",
                          str(token_file), *args], capture_output=True, text=True, cwd=REPO, env=ENV,
                         timeout=120)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""
    assert len([line for line in out.stderr.splitlines() if "error:" in line]) == 1, out.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_serve_on_cuda_without_cuda_is_one_error_line(tmp_path, token_file, weights):
    out = subprocess.run([*SERVE, "--endpoint", f"ipc://{tmp_path / 'x.sock'}", "--token-file",
                          str(token_file), "--weights", str(weights), "--device", "cuda"],
                         capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120)
    assert out.returncode == 2
    expected = "error: cannot load the model: device 'cuda' requested but CUDA is not available"
    assert out.stderr.strip().splitlines() == [expected]


def test_serve_refuses_a_non_loopback_endpoint(token_file, weights):
    out = subprocess.run([sys.executable, "-m", "backend", "serve", "--endpoint", "tcp://0.0.0.0:5999",
                          "--token-file", str(token_file), "--weights", str(weights)], capture_output=True,
                         text=True, cwd=REPO, env=ENV, timeout=60)
    assert out.returncode == 2
    assert "--allow-remote" in out.stderr and "READY" not in out.stdout


def test_killed_server_mid_request_gives_an_error_within_the_timeout(token_file, weights):
    proc, endpoint = start_serve(free_tcp_endpoint(), token_file, weights)
    try:
        with Client(endpoint, TOKEN, timeout=1.0, retries=1) as c:
            w, h = 1200, 1000
            # Freeze the server first so the request is surely still in flight when it dies: a small model
            # can finish open_image faster than any fixed sleep.
            proc.send_signal(signal.SIGSTOP)
            call = c.submit("open_image", rgb_image(w, h), w, h, 3)
            time.sleep(0.05)
            proc.kill()
            start = time.monotonic()
            with pytest.raises(BackendNotRunning):
                call.result()
            assert time.monotonic() - start < 1.0 * 2 + 1.5
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("from_thread", [False, True], ids=["main-thread+pdeathsig", "worker-thread+watchdog"])
def test_launched_backend_reports_ready_and_dies_with_its_parent(tmp_path, token_file, weights, from_thread):
    endpoint = f"ipc://{tmp_path / 'l.sock'}"
    config = {"schema": 1, "endpoint": endpoint, "token_file": str(token_file), "device": "cpu",
              "backend_command": [sys.executable, "-m", "backend", "serve", "--weights", str(weights)]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    parent = textwrap.dedent(f"""
        import os, sys, threading, time
        sys.path.insert(0, {str(REPO)!r})
        from dfimat_client.config import load_config
        from dfimat_client.launcher import start_backend
        def go():
            proc = start_backend(load_config({str(tmp_path / 'config.json')!r}), cwd={str(REPO)!r}, timeout=120)
            print(proc.endpoint, proc.process.pid, flush=True)
        if {from_thread!r}:
            # The launching thread ends at once (as a Krita worker might); the backend must stay up.
            t = threading.Thread(target=go)
            t.start()
            t.join()
        else:
            go()
        time.sleep(120)
    """)
    env = dict(ENV, XDG_RUNTIME_DIR=str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, env=env)
    try:
        ready_endpoint, pid = p.stdout.readline().split()
        assert ready_endpoint == endpoint
        time.sleep(1.0)  # longer than the watchdog period: the backend must outlive the launching thread
        assert is_running(endpoint, TOKEN, timeout=5)
        p.kill()
        p.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(int(pid)):
            time.sleep(0.1)
        assert not _alive(int(pid)), "the backend outlived its parent"
    finally:
        p.kill()


def test_client_autostart_starts_the_backend_from_the_config(tmp_path, token_file, weights, monkeypatch):
    endpoint = f"ipc://{tmp_path / 'auto.sock'}"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"schema": 1, "endpoint": endpoint, "token_file": str(token_file), "device": "cpu",
                               "backend_command": [sys.executable, "-m", "backend", "serve", "--weights",
                                                   str(weights)]}))
    monkeypatch.setenv("DFIMAT_CONFIG", str(cfg))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.chdir(REPO)  # the backend command runs ``-m backend`` from the repository
    c = Client(timeout=10, autostart=True)
    try:
        assert not is_running(endpoint, TOKEN, timeout=0.2)
        assert c.hello()["protocol"] == 1
        assert c.backend_process is not None and c.backend_process.process.poll() is None
    finally:
        c.disconnect()
        if c.backend_process is not None:
            assert c.backend_process.stop() == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_matte_writes_an_alpha_png(tmp_path, weights):
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.frombuffer(rgb_image(64, 48), np.uint8).reshape(48, 64, 3))
    out = tmp_path / "alpha.png"
    run = subprocess.run([sys.executable, "-m", "backend", "matte", str(image), "--box", "5,5,50,40", "--click",
                          "20,20,+", "--scribble", "10,10;30,30:-", "--text", "the person", "-o", str(out),
                          "--weights", str(weights)], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120)
    assert run.returncode == 0, run.stderr
    alpha = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert alpha.shape == (48, 64) and alpha.dtype == np.uint8


@pytest.mark.parametrize("args", [["--box", "1,2,3"], ["--click", "a,b"], ["--scribble", "1,2:x"], []])
def test_matte_rejects_bad_prompts(tmp_path, weights, args):
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    run = subprocess.run([sys.executable, "-m", "backend", "matte", str(image), *args, "-o",
                          str(tmp_path / "a.png"), "--weights", str(weights)], capture_output=True, text=True,
                         cwd=REPO, env=ENV, timeout=120)
    assert run.returncode == 2
    assert not (tmp_path / "a.png").exists()


def test_batch_writes_one_png_per_person(tmp_path, weights):
    folder = tmp_path / "photos"
    folder.mkdir()
    astronaut = cv2.imread(str(REPO / "samples" / "astronaut.png"))
    cv2.imwrite(str(folder / "astronaut.png"), cv2.resize(astronaut, (256, 256)))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "backend", "batch", str(folder), "--text", "person", "-o", str(out),
                          "--weights", str(weights)], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=180)
    assert run.returncode == 0, run.stderr
    index = json.loads((out / "index.json").read_text())
    assert [e["image"] for e in index] == ["astronaut.png"]
    masks = index[0]["masks"]
    assert len(masks) >= 1 and masks[0]["box"] is not None  # the astronaut is found by the person detector
    for m in masks:
        assert cv2.imread(str(out / m["file"]), cv2.IMREAD_UNCHANGED).shape == (256, 256)
    assert "1/1" in run.stderr  # the progress bar
