"""The project's test command: prepare the development venv, lint, run pytest.

Stdlib only so it runs on a fresh machine's Python. Extra arguments go to pytest
(e.g. ``python tools/run_tests.py -m krita``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from installer.venv import (  # noqa: E402 - stdlib only, like this script
    CONSTRAINTS,
    constraint_args,
    mediapipe_install_args,
    torch_install_args,
)

VENV = Path(os.environ.get("DFIMAT_DEV_VENV", ROOT / ".venv"))
# The tests' torch, pinned. A plain `torch==2.13.0` from PyPI is the multi-GB CUDA build on Linux, so it is
# installed the installer's way: from the CPU index when reachable, else the CPU wheel kept on local disk
# (DFIMAT_TORCH_SPEC overrides both).
TORCH_PIN = "torch==2.13.0"
TORCH_SPEC = os.environ.get("DFIMAT_TORCH_SPEC", TORCH_PIN)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list[str | Path], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def ensure_venv() -> Path:
    py = venv_python()
    if not py.exists():
        run([sys.executable, "-m", "venv", VENV])
    stamp = VENV / ".dfimat-dev-deps"
    pins = CONSTRAINTS.read_bytes() if CONSTRAINTS.is_file() else b""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + pins + TORCH_SPEC.encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        return py
    pip = [py, "-m", "pip", "install", "-q"]
    run([*pip, "--upgrade", "pip"])
    has_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode == 0
    # The installer's steps (installer/venv.py ensure_venv): torch's build alone, then everything else at the
    # versions in constraints.txt, then mediapipe without the dependencies the backend never uses.
    if not has_torch:
        run([*pip, "--no-deps", *torch_install_args("cpu", print, requirement=TORCH_PIN)])
    run([*pip, *constraint_args(), "-e", f"{ROOT}[dev]"])
    mediapipe = mediapipe_install_args()
    if mediapipe:
        run([*pip, *mediapipe])
    stamp.write_text(want)
    return py


def runs_editor_tests(argv: list[str]) -> bool:
    """The whole suite (no arguments, as CI runs it) or a marker selection that asks for gimp or krita."""
    if not argv:
        return True
    if "-m" in argv[:-1]:
        expr = argv[argv.index("-m") + 1]
        return ("gimp" in expr or "krita" in expr) and "not" not in expr
    return False


def prebuild_roots(argv: list[str]) -> subprocess.Popen | None:
    """Start building the real editors' sandbox roots (tests/editors/sandbox.py, stdlib only) while pip works: a
    first build takes minutes. The tests wait for it on the roots' file locks; nothing is built that a test would
    not build itself, and a root that cannot be built here is left to the tests to skip or fail."""
    if not runs_editor_tests(argv):
        return None
    log = ROOT / ".cache" / "sandbox-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"+ building the editors' sandbox roots in the background (log: {log})", flush=True)
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.editors.sandbox"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def main(argv: list[str]) -> int:
    builder = prebuild_roots(argv)
    try:
        py = ensure_venv()
        run([py, "-m", "ruff", "check", ROOT])
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.run([str(py), "-m", "pytest", *argv], cwd=ROOT, env=env).returncode
    finally:
        if builder is not None:
            builder.wait()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        print(f"run_tests: step failed with exit code {exc.returncode}: {exc.cmd}", file=sys.stderr)
        sys.exit(exc.returncode or 1)
