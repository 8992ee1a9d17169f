"""Helpers shared by the install.py tests (no tests here): isolated home, models folder, runner, snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.py"


REPO_MODELS = REPO / "models"
# What pytest's tmp folders allow: a ZeroMQ ipc path must stay under ~100 bytes (see installer.paths).
_IPC_MAX = 100


def isolated_env(tmp: Path) -> dict[str, str]:
    """Environment whose every per-user folder lies under ``tmp`` (so nothing touches the real home).

    It has its own runtime folder, so the backend that ``--check`` starts listens on a socket of this test alone
    (a shared TCP port would make parallel runs and a running real backend interfere).
    """
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DFIMAT_CONFIG", "XDG_RUNTIME_DIR", "PYTHONPATH", "DFIMAT_MODELS_DIR", "DFIMAT_WEIGHTS")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"))
    runtime = tmp / "rt"
    if len(str(runtime / "dfimat" / "backend.sock")) <= _IPC_MAX:
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    return env


def expected_endpoint(env: dict[str, str]) -> str:
    runtime = env.get("XDG_RUNTIME_DIR")
    return f"ipc://{runtime}/dfimat/backend.sock" if runtime else "tcp://127.0.0.1:5599"


def copy_real_models(root: Path) -> Path:
    """A copy of the committed models folder (real manifest, real DFIMat-S weights); returns the checkpoint.

    A copy, so tests may corrupt or delete files; the manifest is copied too, so the installer uses it.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO_MODELS / "manifest.json", root / "manifest.json")
    for folder in ("dfimat-s", "person"):  # every default model's folder (person: the finder's networks)
        shutil.copytree(REPO_MODELS / folder, root / folder, dirs_exist_ok=True)
    return root / "dfimat-s" / "dfimat-s.pt"


def manifest_paths() -> list[str]:
    """The files of the default model in the committed manifest."""
    data = json.loads((REPO_MODELS / "manifest.json").read_text(encoding="utf-8"))
    return [f["path"] for m in data["models"] if m["default"] for f in m["files"]]


def row(stdout: str, item: str) -> str:
    """The ``--check`` table line of ``item`` (exact item name), or "" when absent."""
    for line in stdout.splitlines():
        if line.split("  ")[0].strip() == item:
            return line
    return ""


def make_models(root: Path, payload: bytes, url: str | None = None, sha256: str | None = None) -> Path:
    """A models folder with its own manifest naming one default file (written unless a URL serves it)."""
    root.mkdir(parents=True, exist_ok=True)
    rel = "dfimat-s/dfimat-s.pt"
    if url is None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)
    manifest = {"schema": 1, "models": [{
        "name": "dfimat-s", "version": "test", "license": "Apache-2.0", "default": True,
        "files": [{"path": rel, "sha256": sha256 or hashlib.sha256(payload).hexdigest(), "size": len(payload),
                   "url": url}],
    }]}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root / rel


def fast_args(tmp: Path, python: str | None = None) -> list[str]:
    """Offline install into fake editor folders, reusing this interpreter as the backend (no venv build).

    The models folder is ``tmp/models`` (see make_models).
    """
    py = python or sys.executable
    return ["--yes", "--backend-python", sys.executable, "--models-dir", str(tmp / "models"),
            "--gimp-dir", str(tmp / "gimp-plug-ins"), "--gimp-python", py,
            "--krita-dir", str(tmp / "pykrita"), "--krita-python", py, "--kritarc", str(tmp / "kritarc")]


def run_install(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(INSTALL), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=env["HOME"])


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``roots`` with (mtime_ns, size, mode): equal snapshots mean nothing was rewritten."""
    out = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                p = Path(dirpath) / name
                st = p.lstat()
                out[str(p)] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return out
