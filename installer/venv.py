"""The backend's own virtual environment: create, install torch (CPU or CUDA) and the backend, verify."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from installer.files import source_files
from installer.paths import venv_python

REPO = Path(__file__).resolve().parent.parent
STAMP_NAME = "dfimat-install.json"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# When the official CPU index is unreachable, a plain PyPI "torch" would be the multi-GB CUDA build. This pin
# instead resolves to the +cpu wheel that this project's machines keep on local disk (pip find-links); on other
# machines set DFIMAT_TORCH_SPEC (e.g. to a wheel path) to choose another build.
TORCH_FALLBACK_SPEC = "torch==2.13.0"
TORCH_RANGE = ">=2.4,<2.15"
# Exact versions of every package the backend and dev venvs install (torch aside: its own step picks the build), so
# pip resolves without backtracking. Regenerate with `python3 tools/update_constraints.py` (docs/install.md).
CONSTRAINTS = REPO / "constraints.txt"
# mediapipe 0.10.21 is the last release whose wheel carries its person models. It is installed without its declared
# dependencies: jax/jaxlib, sounddevice and sentencepiece serve parts of mediapipe the backend never imports (its
# solutions.pose and solutions.face_detection need numpy, opencv, protobuf, absl-py, attrs, flatbuffers and
# matplotlib, which pyproject.toml lists; opencv-contrib-python is the backend's own dependency), and resolving
# them made pip backtrack through many jax/jaxlib and opencv-contrib-python releases (issue #22). No wheel exists for
# Python 3.13+.
MEDIAPIPE_SPEC = "mediapipe==0.10.21"
# mediapipe is installed without its declared dependencies, so importing the two solutions the backend uses is what
# shows that the run-time ones it does need are there. cv2.ximgproc (stroke thinning) exists only in opencv's
# contrib build: a plain opencv-python installed over it would break the strokes at run time.
IMPORT_CHECK = ("import sys, backend, torch, zmq, numpy, cv2\ncv2.ximgproc.thinning\n"
                "if sys.version_info < (3, 13): import mediapipe.python.solutions.pose, "
                "mediapipe.python.solutions.face_detection\n"
                "print(torch.__version__, torch.cuda.is_available())")


def stage_sources(dest: Path) -> Path:
    """Copy what the package build needs into ``dest``.

    pip builds a local project in place, and setuptools' build/ folder keeps modules that were since deleted from
    the sources, which would then ship again; a fresh copy per install avoids that and leaves the repo untouched.
    """
    root = dest / "dfimat"
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
        if (REPO / name).is_file():
            root.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    for pkg in ("backend", "dfimat_client"):
        for rel in source_files(REPO / pkg):
            (root / pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / pkg / rel, root / pkg / rel)
    return root


def detect_device() -> str:
    """``cuda`` when ``nvidia-smi`` runs and lists a GPU, else ``cpu``."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return "cpu"
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    return "cuda" if out.returncode == 0 and "GPU" in out.stdout else "cpu"


def constraint_args() -> list[str]:
    """pip's ``-c`` for the pinned versions (nothing when a source tree lacks the file)."""
    return ["-c", str(CONSTRAINTS)] if CONSTRAINTS.is_file() else []


def mediapipe_install_args(version: tuple[int, int] = sys.version_info[:2]) -> list[str]:
    """pip arguments that add mediapipe alone (its run-time needs come with the backend), or [] where it has no
    wheel (Python 3.13+: the pose prior and the people finder are then off, as the backend reports)."""
    if version >= (3, 13):
        return []
    return ["--no-deps", *constraint_args(), MEDIAPIPE_SPEC]


def fingerprint(device: str) -> str:
    """Changes whenever what would be installed changes: sources, dependencies, pins, device, torch choice."""
    h = hashlib.sha256()
    h.update(f"{device}\0{os.environ.get('DFIMAT_TORCH_SPEC', '')}\0".encode())
    h.update((REPO / "pyproject.toml").read_bytes())
    if CONSTRAINTS.is_file():
        h.update(CONSTRAINTS.read_bytes())
    for pkg in ("backend", "dfimat_client"):
        root = REPO / pkg
        if root.is_dir():
            for rel in source_files(root):
                h.update(f"{pkg}/{rel.as_posix()}\0".encode())
                h.update((root / rel).read_bytes())
    return h.hexdigest()


def read_stamp(venv: Path) -> dict:
    try:
        return json.loads((venv / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def import_check(python: Path) -> tuple[bool, str]:
    """Run the backend's key imports in ``python``; returns (ok, torch version + cuda flag or the error)."""
    if not Path(python).exists():
        return False, f"{python} does not exist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Importing mediapipe imports matplotlib, which writes a font cache under ~/.cache/matplotlib: a check must
    # leave no file in the user's home, so that cache goes to a temporary folder.
    with tempfile.TemporaryDirectory(prefix="dfimat-check-") as scratch:
        env["MPLCONFIGDIR"] = scratch
        try:
            out = subprocess.run(
                [str(python), "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=300, env=env,
                cwd=Path.home(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
    if out.returncode:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return False, lines[-1] if lines else f"exit code {out.returncode}"
    return True, out.stdout.strip()


def describe_torch(detail: str) -> str:
    """Human form of import_check's output ("2.13.0+cpu False")."""
    version, _, cuda = detail.rpartition(" ")
    return f"torch {version}, CUDA {'available' if cuda == 'True' else 'not available'}"


def is_current(venv: Path, device: str) -> bool:
    return read_stamp(venv).get("fingerprint") == fingerprint(device) and import_check(venv_python(venv))[0]


def can_import(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0


def _run(cmd: list[str], log) -> None:
    log("  + " + " ".join(cmd))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(cmd, check=True, env=env)


def _cpu_index_reachable(timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(TORCH_CPU_INDEX + "/torch/", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def torch_install_args(device: str, log, requirement: str | None = None) -> list[str]:
    """pip arguments that install a torch build matching ``device`` without dragging CUDA onto CPU machines.

    ``requirement`` (default: the backend's supported range) lets tools/run_tests.py keep its exact pin while
    still getting the CPU build.
    """
    override = os.environ.get("DFIMAT_TORCH_SPEC")
    if override:
        return [override]
    wanted = requirement or f"torch{TORCH_RANGE}"
    if device == "cuda":
        return [wanted]  # PyPI's default Linux torch wheel is the CUDA build
    fallback = requirement or TORCH_FALLBACK_SPEC
    if _pip_offline():
        log(f"  torch: PIP_NO_INDEX is set, using {fallback} from pip's find-links")
        return [fallback]
    if _cpu_index_reachable():
        log(f"  torch: CPU build from {TORCH_CPU_INDEX}")
        return ["--index-url", TORCH_CPU_INDEX, wanted]
    log(f"  torch: {TORCH_CPU_INDEX} unreachable, using {fallback} (the CPU wheel on this machine)")
    return [fallback]


def _pip_offline() -> bool:
    """pip was told to use no index (an offline install from a wheel folder): probing the CPU index is pointless."""
    return os.environ.get("PIP_NO_INDEX", "").strip().lower() in ("1", "true", "yes", "on")


_LIST_DISTS = ("import importlib.metadata as m, json; "
               "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}))")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_dists(python: Path) -> dict[str, str]:
    """Distribution name (canonical form) -> version of what ``python`` has installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(python), "-c", _LIST_DISTS], capture_output=True, text=True, env=env)
    if out.returncode:
        return {}
    return {_canonical(k): v for k, v in json.loads(out.stdout or "{}").items()}


def onnxruntime_commands(python: Path, device: str, installed: dict[str, str]) -> list[list[str]]:
    """pip commands that leave exactly one onnxruntime build: the GPU one on ``cuda``, the CPU one otherwise.

    The base dependencies always pull ``onnxruntime``, and the ``gpu`` extra adds ``onnxruntime-gpu``; both
    own the same ``onnxruntime/`` package folder, so uninstalling the unwanted one deletes files of the other,
    which is therefore reinstalled (same version, no dependencies) right after.
    """
    keep, drop = ("onnxruntime-gpu", "onnxruntime") if device == "cuda" else ("onnxruntime", "onnxruntime-gpu")
    if keep not in installed or drop not in installed:
        return []
    pip = [str(python), "-m", "pip"]
    return [[*pip, "uninstall", "-y", drop],
            [*pip, "install", "--disable-pip-version-check", "-q", "--force-reinstall", "--no-deps",
             f"{keep}=={installed[keep]}"]]


def ensure_venv(venv: Path, device: str, log=print) -> None:
    """Create or repair ``venv`` and install the backend into it (non-editable); the stamp is written last.

    The stamp's absence is what marks the venv incomplete, so an interrupted run is redone on the next one.
    """
    python = venv_python(venv)
    previous_device = read_stamp(venv).get("device")
    (venv / STAMP_NAME).unlink(missing_ok=True)
    if not python.exists() or not (venv / "pyvenv.cfg").exists():
        # `venv --clear` empties the folder: never do that to one that is not (the remains of) a venv.
        if venv.is_dir() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
            raise RuntimeError(f"{venv} exists and is not a virtual environment; choose another --venv")
        venv.parent.mkdir(parents=True, exist_ok=True)
        try:
            _run([sys.executable, "-m", "venv", "--clear", str(venv)], log)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"could not create a venv at {venv} with {sys.executable}; on Debian/Ubuntu install "
                "python3-venv (sudo apt-get install python3-venv) and rerun"
            ) from exc
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    # pip itself is not pinned: an offline install (PIP_NO_INDEX, a wheel folder without pip) keeps the venv's own.
    _run([*pip, "-q", "--upgrade", "pip"], log)
    has_torch = can_import(python, "torch")
    quiet = ["-q"] if has_torch else []  # a first install shows pip's progress; an update only its errors
    # torch alone (the build the device needs, from wherever torch_install_args finds it); its own dependencies
    # then come pinned with the backend's in the next step.
    if not has_torch:
        _run([*pip, "--no-deps", *torch_install_args(device, log)], log)
    elif previous_device not in (None, device):
        log(f"  device changed {previous_device} -> {device}: replacing torch")
        _run([*pip, "--force-reinstall", "--no-deps", *torch_install_args(device, log)], log)
    with tempfile.TemporaryDirectory(prefix="dfimat-src-") as tmp:
        src = stage_sources(Path(tmp))
        target = f"{src}[gpu]" if device == "cuda" else str(src)
        # --upgrade rebuilds the local project even when its version number did not change; the constraints
        # hold every other package at its pinned version, so --upgrade moves none of them.
        _run([*pip, *quiet, *constraint_args(), "--upgrade", target], log)
    mediapipe = mediapipe_install_args()
    if mediapipe:
        _run([*pip, *quiet, *mediapipe], log)
    for cmd in onnxruntime_commands(python, device, installed_dists(python)):
        _run(cmd, log)
    ok, detail = import_check(python)
    if not ok:
        raise RuntimeError(f"the backend venv at {venv} was installed but its imports fail: {detail}")
    stamp = {"fingerprint": fingerprint(device), "device": device, "torch": detail}
    (venv / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
