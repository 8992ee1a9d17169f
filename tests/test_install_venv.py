"""The real thing: install.py builds a fresh backend venv with pip, offline, and runs the committed DFIMat-S.

Offline, enforced: install.py runs with ``PIP_NO_INDEX=1`` and every proxy variable pointing at a closed loopback
port, so pip, the torch CPU-index probe, ``requests`` and the model hubs fail at once if anything tries to go online.
pip cannot build a fresh venv from nothing, though: the backend's packages are not in the repository. So a
wheelhouse (``$DFIMAT_WHEELHOUSE``, default ``.cache/wheelhouse``) is filled once per machine with ``pip download``
from the normal indexes (PyPI, and the CPU torch index when reachable, else the CPU torch wheel the machine keeps
on disk), and pip installs only from there (plus the machine's configured ``find-links``). The model step and the
demo need no wheelhouse: the committed weights are used from a copy of ``models/`` with the real manifest.

Slow (a few minutes: pip unpacks torch and the backend's dependencies), so marked ``slow``; the README's test
command still runs it. The plug-in folders are fake here (tests/test_install_editors.py installs into the real
editors).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_install_support import (
    REPO,
    copy_real_models,
    isolated_env,
    manifest_paths,
    row,
    run_install,
    snapshot,
)

sys.path.insert(0, str(REPO))

from installer.venv import (  # noqa: E402
    CONSTRAINTS,
    MEDIAPIPE_SPEC,
    TORCH_FALLBACK_SPEC,
    constraint_args,
    torch_install_args,
)

pytestmark = pytest.mark.slow

WHEELHOUSE = Path(os.environ.get("DFIMAT_WHEELHOUSE", REPO / ".cache" / "wheelhouse"))
# The discard port: nothing listens on it, so a proxied connection is refused immediately.
DEAD_PROXY = "http://127.0.0.1:9"


def wheelhouse_requirements() -> list[str]:
    """Everything a fresh venv needs: the CPU torch the installer falls back to, the backend's dependencies and
    the build backend pip needs to build the backend package."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib: the project supports 3.10

    def strings(key: str) -> list[str]:
        block = re.search(rf"^{key}\s*=\s*\[(.*?)\]", text, re.M | re.S)
        assert block, f"pyproject.toml has no {key} list"
        return re.findall(r'"([^"]+)"', re.sub(r"#.*", "", block.group(1)))

    deps = [d for d in strings("dependencies") if not re.match(r"torch\b", d)]
    return [TORCH_FALLBACK_SPEC, *deps, *strings("requires")]


def fill_wheelhouse() -> str | None:
    """Download what wheelhouse_requirements() names at the versions of constraints.txt, and mediapipe alone (the
    installer adds it without its dependencies), once per change of the list or the pins; a skip reason on
    failure."""
    pins = CONSTRAINTS.read_text(encoding="utf-8") if CONSTRAINTS.is_file() else ""
    wanted = "\n".join([*wheelhouse_requirements(), MEDIAPIPE_SPEC]) + "\n" + pins
    stamp = WHEELHOUSE / "requirements.txt"
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    with open(WHEELHOUSE.parent / (WHEELHOUSE.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == wanted:
            return None
        pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "-d", str(WHEELHOUSE)]
        # torch first, the way the installer picks it (never PyPI's CUDA build); the rest then finds it here.
        steps = [[*pip, "--no-deps", *torch_install_args("cpu", print, requirement=TORCH_FALLBACK_SPEC)],
                 [*pip, *constraint_args(), "--find-links", str(WHEELHOUSE), TORCH_FALLBACK_SPEC,
                  *wheelhouse_requirements()[1:]],
                 [*pip, "--no-deps", *constraint_args(), MEDIAPIPE_SPEC]]
        for cmd in steps:
            print("+", " ".join(cmd), flush=True)
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if out.returncode:
                return f"cannot fill the wheelhouse {WHEELHOUSE} (needs PyPI once): {out.stderr.strip()[-500:]}"
        stamp.write_text(wanted)
    return None


def offline_env(tmp: Path) -> dict[str, str]:
    env = isolated_env(tmp)
    links = [os.environ.get("PIP_FIND_LINKS", ""), str(WHEELHOUSE)]
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=" ".join(filter(None, links)), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        env[name] = env[name.upper()] = DEAD_PROXY
    return env


def _foreground(png: Path) -> tuple[float, np.ndarray]:
    alpha = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert alpha is not None, png
    mask = alpha > 127
    return float(mask.mean()), mask


def _reference_demo(tmp: Path, models: Path) -> Path:
    """The same demo command with the development checkout's backend (the repository sources)."""
    from installer.cli import DEMO_BOX, DEMO_IMAGE

    out = tmp / "reference-alpha.png"
    env = {k: v for k, v in os.environ.items() if k not in ("DFIMAT_CONFIG", "DFIMAT_WEIGHTS")}
    env.update(DFIMAT_MODELS_DIR=str(models), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "backend", "matte", str(DEMO_IMAGE), "--box",
                           ",".join(map(str, DEMO_BOX)), "-o", str(out)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_fresh_venv_offline_with_the_committed_model(tmp_path):
    reason = fill_wheelhouse()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    env = offline_env(tmp_path)
    models = tmp_path / "models"
    copy_real_models(models)
    venv = tmp_path / "venv"
    args = ["--venv", str(venv), "--yes", "--models-dir", str(models), "--gimp-dir", str(tmp_path / "gimp-plug-ins"),
            "--gimp-python", sys.executable, "--krita-dir", str(tmp_path / "pykrita"), "--krita-python",
            sys.executable, "--kritarc", str(tmp_path / "kritarc"), "--cpu"]

    first = run_install([*args, "--demo"], env, timeout=2400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"PIP_NO_INDEX is set, using {TORCH_FALLBACK_SPEC}" in first.stdout, first.stdout[-3000:]
    # The pinned versions leave pip nothing to try (issue #22: it used to walk back through jaxlib releases).
    assert "looking at multiple versions" not in first.stdout + first.stderr
    python = venv / "bin" / "python"
    conf = json.loads((Path(env["XDG_CONFIG_HOME"]) / "dfimat" / "config.json").read_text())
    assert conf["backend_command"] == [str(python), "-m", "backend", "serve"] and conf["venv"] == str(venv)
    assert conf["models_dir"] == str(models)
    clean = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    # Non-editable: the venv's backend is a copy, not the repo on sys.path.
    where = subprocess.run([str(python), "-c", "import backend; print(backend.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=clean)
    assert str(venv) in where.stdout, where
    probe = "import torch, importlib.metadata as m; print(torch.version.cuda, [d.metadata['Name'] for d in " \
            "m.distributions() if d.metadata['Name'].lower().startswith('onnxruntime')])"
    cpu = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=clean)
    assert cpu.stdout.strip() == "None ['onnxruntime']", cpu  # CPU torch, one onnxruntime build
    # The console entry point with its three subcommands.
    entry = subprocess.run([str(venv / "bin" / "dfimat-backend"), "--help"], capture_output=True, text=True,
                           env=clean, cwd=tmp_path)
    assert entry.returncode == 0 and all(c in entry.stdout for c in ("serve", "matte", "batch")), entry

    # The demo ran the committed DFIMat-S in the new venv: same matte as the repository's own backend.
    demo = Path(env["HOME"]) / "dfimat-demo-alpha.png"
    assert demo.is_file() and "[demo] wrote" in first.stdout, first.stdout[-2000:]
    share, mask = _foreground(demo)
    _ref_share, ref = _foreground(_reference_demo(tmp_path, models))
    iou = float((mask & ref).sum() / max(1, (mask | ref).sum()))
    print(f"demo: {share:.1%} foreground, IoU {iou:.3f} with the repository backend's matte")
    assert 0.2 < share < 0.7 and iou > 0.95

    before = snapshot(tmp_path)
    second = run_install(args, env, timeout=600)
    assert second.returncode == 0, second.stderr
    steps = [line for line in second.stdout.splitlines() if line.startswith("[")]
    assert steps and all(line.endswith("nothing to do") for line in steps), second.stdout
    assert snapshot(tmp_path) == before

    check = run_install(["--check", *args], env)
    assert check.returncode == 0, check.stdout
    assert "CUDA not available" in row(check.stdout, "backend env")
    assert "trial start answered hello" in row(check.stdout, "backend reachable"), check.stdout
    for rel in manifest_paths():
        assert " ok " in row(check.stdout, f"model {rel}"), check.stdout

    # A corrupted committed file (same size, one byte changed) is caught by its sha256 alone.
    victim = models / "dfimat-s" / "onnx" / "iscn.onnx"
    good = victim.read_bytes()
    victim.write_bytes(good[:5000] + bytes([good[5000] ^ 0xFF]) + good[5001:])
    bad = run_install(["--check", *args], env)
    assert bad.returncode == 1
    assert "FAIL" in row(bad.stdout, "model dfimat-s/onnx/iscn.onnx") and "sha256" in bad.stdout, bad.stdout
    victim.write_bytes(good)

    assert run_install(["--uninstall", "--yes"], env).returncode == 0
    assert not venv.exists()
    assert not (Path(env["XDG_CONFIG_HOME"]) / "dfimat").exists()
    assert demo.is_file() and all((models / rel).is_file() for rel in manifest_paths())
