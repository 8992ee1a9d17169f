"""``install.py --check``: one row per thing that must work, and a non-zero exit when any row fails."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from installer import config as cfg
from installer import editors as ed
from installer import models, plugins, venv
from installer.paths import config_path
from installer.record import marker_path

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"
# Loading torch and the model takes ~5 s on an idle 2-core machine; a busy or slow one gets ample margin.
START_TIMEOUT = 180.0

_PING = """
import sys, zmq
from dfimat_client import protocol
endpoint, token = sys.argv[1], open(sys.argv[2]).read().strip()
ctx = zmq.Context()
s = ctx.socket(zmq.REQ)
s.setsockopt(zmq.LINGER, 0)
s.connect(endpoint)
rid, frames = protocol.encode_request("hello", {}, token=token, stream=False)
s.send_multipart(frames)
if not s.poll(3000):
    print("no answer within 3 s"); sys.exit(3)
reply = protocol.decode_reply(s.recv_multipart())
if reply.kind == protocol.KIND_ERROR:
    print("answered with error", reply.error); sys.exit(4)
print("answered hello", {k: v for k, v in (reply.result or {}).items() if k in ("version", "device", "model")})
"""


@dataclass
class Row:
    item: str
    status: str
    detail: str


def _ping(python: Path, conf: dict) -> tuple[bool, str]:
    """Send ``hello`` to the configured endpoint; (answered, what happened)."""
    # The repo's copy of the (pure Python) protocol module, so the probe also works with --backend-python
    # interpreters that do not have dfimat_client installed.
    env = dict(os.environ, PYTHONPATH=str(venv.REPO))
    try:
        out = subprocess.run([str(python), "-c", _PING, conf["endpoint"], conf["token_file"]],
                             capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    msg = (out.stdout or out.stderr).strip().splitlines()
    return out.returncode == 0, msg[-1] if msg else f"exit code {out.returncode}"


def _wait_ready(proc: subprocess.Popen, timeout: float) -> bool:
    """True once the backend printed its READY line (it prints it after the model is loaded and bound)."""
    ready = threading.Event()

    def pump() -> None:
        # Drains stdout for the backend's whole life so it can never block on a full pipe.
        for line in proc.stdout:
            if line.startswith("READY "):
                ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
        ready.wait(0.2)
    reader.join(timeout=1.0 if proc.poll() is not None else 0)
    return ready.is_set()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_line(log) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def trial_start(python: Path, conf: dict, timeout: float = START_TIMEOUT) -> tuple[bool, str]:
    """Start ``backend_command`` as a plug-in would, wait until it has loaded the model, say hello, stop it."""
    cmd = [*conf["backend_command"], "--endpoint", conf["endpoint"], "--device", conf.get("device") or "cpu",
           "--token-file", conf["token_file"], "--parent-pid", str(os.getpid())]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["DFIMAT_CONFIG"] = str(config_path())  # the backend finds models_dir through the same config
    started = time.monotonic()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                                    env=env, cwd=Path.home())
        except OSError as exc:
            return False, f"cannot start {cmd[0]}: {exc}"
        try:
            if not _wait_ready(proc, timeout):
                code = proc.poll()
                why = f"exited with code {code}" if code is not None else f"printed no READY within {timeout:g} s"
                return False, f"{why} ({_last_line(log)})"
            ok, msg = _ping(python, conf)
            return ok, f"{msg} after {time.monotonic() - started:.1f} s" if ok else f"started but {msg}"
        finally:
            _stop(proc)


def _reachable_row(python: Path, conf: dict) -> Row:
    ok, msg = _ping(python, conf)
    if ok:
        return Row("backend reachable", OK, f"{conf['endpoint']}: {msg}")
    # Nothing answers, which is normal (the plug-ins start the backend on demand); whether they can is what
    # matters, so do what they would do.
    ok, msg = trial_start(python, conf)
    if ok:
        return Row("backend reachable", OK, f"{conf['endpoint']}: not running; a trial start {msg} (stopped again)")
    command = " ".join(conf["backend_command"])
    return Row("backend reachable", FAIL, f"{conf['endpoint']}: not running, and `{command}` {msg}")


def _backend_rows(conf: dict) -> list[Row]:
    rows = []
    python = Path(conf["backend_command"][0])
    ok, detail = venv.import_check(python)
    rows.append(Row("backend env", OK if ok else FAIL, f"{python}: {venv.describe_torch(detail) if ok else detail}"))
    if ok:
        cuda = detail.split()[-1] == "True"
        want = conf.get("device", "cpu")
        good = want != "cuda" or cuda
        rows.append(Row("device", OK if good else FAIL, f"{want}" + ("" if good else ": torch sees no CUDA device")))
        stamp = venv.read_stamp(Path(conf["venv"]))
        if stamp and stamp.get("fingerprint") != venv.fingerprint(want):
            rows.append(Row("backend version", WARN, "the repo changed since install: rerun install.py"))
        if cfg.token_problem(Path(conf["token_file"])) is not None:
            rows.append(Row("backend reachable", SKIP, "no usable token"))
            return rows
        rows.append(_reachable_row(python, conf))
    return rows


def _model_rows(models_dir: Path) -> list[Row]:
    try:
        manifest = models.load_manifest(models.manifest_path(models_dir))
        files = models.default_files(manifest)
    except ValueError as exc:
        return [Row("models", FAIL, str(exc))]
    rows = []
    for f in files:
        problem = models.verify(models_dir, f)
        rows.append(Row(f"model {f.path}", FAIL if problem else OK,
                        f"{models_dir / f.path}: {problem}" if problem else f"sha256 {f.sha256[:12]}…, {f.size} bytes"))
    return rows or [Row("models", FAIL, "the manifest names no default model")]


def _editor_rows(editor: ed.Editor) -> list[Row]:
    name = editor.kind
    if editor.plugins_root == Path():
        return [Row(f"{name}", FAIL, f"{editor.label}: {'; '.join(editor.notes)}")]
    rows = [Row(f"{name}", OK, f"{editor.label}; Python: {editor.python.describe()}")]
    plugin_dir = editor.plugins_root / plugins.PLUGIN_NAME
    drift = plugins.plugin_drift(name, plugin_dir)
    rows.append(Row(f"{name} plugin", FAIL if drift else OK,
                    "; ".join(drift[:3]) + (f" (+{len(drift) - 3} more)" if len(drift) > 3 else "") if drift
                    else str(plugin_dir)))
    if name == "krita" and editor.kritarc is not None:
        enabled = plugins.kritarc_enabled(editor.kritarc)
        rows.append(Row("krita enabled", OK if enabled else FAIL,
                        f"{editor.kritarc}: [python] enable_dfimat" + ("=true" if enabled else " not set")))
    if not drift:
        ok, detail = ed.import_probe(editor.python, plugin_dir)
        status = SKIP if ok is None else OK if ok else FAIL
        rows.append(Row(f"{name} imports", status, detail))
    return rows


def diagnose(editors: list[ed.Editor], models_dir: Path | None, editors_wanted: bool = True) -> list[Row]:
    rows: list[Row] = []
    marker = marker_path()
    rows.append(Row("install state", FAIL if marker.exists() else OK,
                    f"incomplete ({marker} exists): rerun install.py" if marker.exists() else "complete"))
    path = config_path()
    try:
        conf = cfg.read_config(path)
    except ValueError as exc:
        rows.append(Row("config", FAIL, str(exc)))
        conf = None
    if conf is not None:
        rows.append(Row("config", OK, str(path)))
        problem = cfg.token_problem(Path(conf["token_file"]))
        rows.append(Row("token", FAIL if problem else OK, f"{conf['token_file']}" + (f": {problem}" if problem else "")))
        rows += _backend_rows(conf)
    if models_dir is None:
        models_dir = Path(conf["models_dir"]) if conf else models.REPO_MODELS
    rows += _model_rows(models_dir)
    if editors_wanted:
        if not editors:
            # Not a failure: the backend and the command line work without an editor, and a user who has none yet
            # needs the way to get one (printed under the table), not an error.
            rows.append(Row("editors", WARN, NO_EDITOR))
        for kind in ("gimp", "krita"):
            if editors and not any(e.kind == kind for e in editors):
                rows.append(Row(kind, SKIP, "not found"))
        for editor in editors:
            rows += _editor_rows(editor)
    return rows


NO_EDITOR = "neither GIMP 3 nor Krita found: the plug-ins are not installed (how to get an editor: below)"
# Where each editor comes from; GIMP 2.10 (Debian 12, Ubuntu 24.04) has no Python 3 plug-ins, so it does not count.
GET_AN_EDITOR = (
    "To use DFIMat from an editor, install GIMP 3 or Krita 5.1+ (or both), then rerun `python3 install.py`:",
    "  Debian 13 / Ubuntu 25.04 and later:  sudo apt-get install gimp krita",
    "  Debian 12 / Ubuntu 24.04:            sudo apt-get install krita   (their GIMP is 2.10: take GIMP 3 from Flatpak)",
    "  Flatpak (any Linux):                 flatpak install flathub org.gimp.GIMP org.kde.krita",
    "  Windows:                             the installers from https://www.gimp.org and https://krita.org",
    "  macOS:                               brew install --cask gimp krita   (or the disk images from the same sites)",
    "Installed somewhere else? Point at its plug-in folder: --gimp-dir DIR / --krita-dir DIR.",
    "Meanwhile the backend's command line works without an editor: `dfimat-backend matte PHOTO --box X0,Y0,X1,Y1`",
    "  (in the backend venv's bin/ or Scripts\\ folder; README, \"Command line, batch and the backend\").",
)


def print_table(rows: list[Row]) -> None:
    width = max(len(r.item) for r in rows)
    for r in rows:
        print(f"{r.item:<{width}}  {r.status:<4}  {r.detail}")
    if any(r.item == "editors" and r.detail == NO_EDITOR for r in rows):
        print()
        print("\n".join(GET_AN_EDITOR))


def failed(rows: list[Row]) -> bool:
    return any(r.status == FAIL for r in rows)
