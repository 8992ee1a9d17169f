"""Helpers shared by the install.py tests (no tests here): isolated home, models folder, runner, snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.py"


def isolated_env(tmp: Path) -> dict[str, str]:
    """Environment whose every per-user folder lies under ``tmp`` (so nothing touches the real home)."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DFIMAT_CONFIG", "XDG_RUNTIME_DIR", "PYTHONPATH", "DFIMAT_MODELS_DIR")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"))
    return env


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
