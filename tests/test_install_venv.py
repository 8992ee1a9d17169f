"""The real thing: install.py builds a fresh backend venv with pip, runs the demo, is a no-op the second time.

Slow (a few minutes: pip installs torch and the backend's dependencies; wheels come from pip's cache and the
machine's local wheel folders when present), so marked ``slow``; the README's test command still runs it.
The plug-in folders are fake (the real editors load the installed plug-ins in tests/test_*_real.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_install_support import isolated_env, make_models, run_install, snapshot

pytestmark = pytest.mark.slow


def test_fresh_venv_install_demo_rerun_check_uninstall(tmp_path):
    env = isolated_env(tmp_path)
    # The isolated HOME would start an empty pip cache: point pip at the machine's so reruns reuse wheels.
    env.setdefault("PIP_CACHE_DIR", str(Path(os.environ.get("HOME", Path.home())) / ".cache" / "pip"))
    make_models(tmp_path / "models", b"placeholder until the venv can build a checkpoint")
    venv = tmp_path / "venv"
    args = ["--venv", str(venv), "--yes", "--models-dir", str(tmp_path / "models"), "--gimp-dir",
            str(tmp_path / "gimp-plug-ins"), "--gimp-python", sys.executable, "--krita-dir", str(tmp_path / "pykrita"),
            "--krita-python", sys.executable, "--kritarc", str(tmp_path / "kritarc"), "--cpu"]

    first = run_install(args, env, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    python = venv / "bin" / "python"
    # A loadable (random) checkpoint built by the venv's own backend copy, so the demo exercises the real CLI
    # and model loader; never used for accuracy.
    tiny = tmp_path / "tiny.pt"
    built = subprocess.run([str(python), "-c", "import sys; from pathlib import Path; from backend.dfimat.model "
                            "import build_tiny_checkpoint; build_tiny_checkpoint(Path(sys.argv[1]))", str(tiny)],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr
    make_models(tmp_path / "models", tiny.read_bytes())

    with_demo = run_install([*args, "--demo"], env, timeout=900)
    assert with_demo.returncode == 0, with_demo.stdout[-3000:] + with_demo.stderr[-3000:]
    conf = json.loads((Path(env["XDG_CONFIG_HOME"]) / "dfimat" / "config.json").read_text())
    assert conf["backend_command"] == [str(python), "-m", "backend", "serve"] and conf["venv"] == str(venv)
    # Non-editable: the venv's backend is a copy, not the repo on sys.path.
    where = subprocess.run([str(python), "-c", "import backend; print(backend.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env={k: v for k, v in env.items() if k != "PYTHONPATH"})
    assert str(venv) in where.stdout, where
    cpu = subprocess.run([str(python), "-c", "import torch; print(torch.version.cuda)"], capture_output=True, text=True)
    assert cpu.stdout.strip() == "None"  # a CPU build of torch, not a CUDA one
    demo = Path(env["HOME"]) / "dfimat-demo-alpha.png"
    assert demo.is_file() and "[demo] wrote" in with_demo.stdout

    before = snapshot(tmp_path)
    second = run_install(args, env, timeout=600)
    assert second.returncode == 0, second.stderr
    steps = [line for line in second.stdout.splitlines() if line.startswith("[")]
    assert steps and all(line.endswith("nothing to do") for line in steps), second.stdout
    assert snapshot(tmp_path) == before

    check = run_install(["--check", *args], env)
    assert check.returncode == 0, check.stdout
    assert "backend env" in check.stdout and "CUDA not available" in check.stdout

    assert run_install(["--uninstall", "--yes"], env).returncode == 0
    assert not venv.exists()
    assert not (Path(env["XDG_CONFIG_HOME"]) / "dfimat").exists()
    assert demo.is_file() and (tmp_path / "models" / "manifest.json").is_file()
