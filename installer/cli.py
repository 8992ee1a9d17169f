"""Command line and step orchestration of ``python install.py``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from installer import check, editors, models, plugins, venv
from installer import config as cfg
from installer.paths import TCP_ENDPOINT, config_path, default_endpoint, default_venv, state_dir, venv_python
from installer.record import Record, marker_path, remove_owned

REPO = Path(__file__).resolve().parent.parent


def project_version() -> str:
    """The version in pyproject.toml (tomllib is 3.11+, and this must run on 3.10)."""
    import re

    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    return m.group(1) if m else "unknown"


DEMO_IMAGE = REPO / "samples" / "astronaut.png"
# The astronaut (hair to suit, without the helmet she holds) inside the 512x512 sample.
DEMO_BOX = (15, 10, 370, 512)
DEMO_OUT = "dfimat-demo-alpha.png"


class StepError(RuntimeError):
    """A step could not finish; the message says what to do. Other steps still run."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python install.py",
        description="Install the DFIMat backend (own venv), the default model and the GIMP 3 / Krita plug-ins.",
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="diagnose the installation; exit 1 on any failure")
    mode.add_argument("--uninstall", action="store_true", help="remove what install.py installed, nothing else")
    ap.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    ap.add_argument("--demo", action="store_true", help="after installing, matte samples/astronaut.png from a box")
    ap.add_argument("--venv", type=Path, help=f"backend virtual environment (default {default_venv()})")
    ap.add_argument("--backend-python", type=Path,
                    help="use this existing interpreter (which already has the backend) instead of a managed venv")
    dev = ap.add_mutually_exclusive_group()
    dev.add_argument("--gpu", action="store_const", const="cuda", dest="device", help="install the CUDA build")
    dev.add_argument("--cpu", action="store_const", const="cpu", dest="device", help="install the CPU build")
    ap.add_argument("--models-dir", type=Path, help=f"where model files live (default {models.REPO_MODELS})")
    ap.add_argument("--endpoint", help=f"backend ZeroMQ endpoint (default {default_endpoint()})")
    ap.add_argument("--no-editors", action="store_true", help="skip the GIMP and Krita plug-ins")
    ap.add_argument("--no-gimp", action="store_true", help="skip the GIMP plug-in")
    ap.add_argument("--no-krita", action="store_true", help="skip the Krita plug-in")
    ap.add_argument("--gimp-dir", type=Path, help="GIMP 3 plug-ins folder (e.g. ~/.config/GIMP/3.0/plug-ins)")
    ap.add_argument("--krita-dir", type=Path, help="Krita pykrita folder (e.g. ~/.local/share/krita/pykrita)")
    ap.add_argument("--kritarc", type=Path, help="Krita's kritarc to enable the plug-in in")
    ap.add_argument("--gimp-python", help="the Python GIMP runs plug-ins with: a command, or a version like 3.12")
    ap.add_argument("--krita-python", help="the Python Krita embeds: a command, or a version like 3.10")
    return ap


def _say(step: str, message: str) -> None:
    print(f"[{step}] {message}", flush=True)


def find_editors(args: argparse.Namespace) -> list[editors.Editor]:
    if args.no_editors:
        return []
    found: list[editors.Editor] = []
    for kind, skip, folder, py_arg in (("gimp", args.no_gimp, args.gimp_dir, args.gimp_python),
                                       ("krita", args.no_krita, args.krita_dir, args.krita_python)):
        if skip:
            continue
        python = editors.python_override(py_arg) if py_arg else None
        if folder is not None:
            found.append(editors.overridden(kind, folder, python, args.kritarc if kind == "krita" else None))
            continue
        for e in editors.find_gimp() if kind == "gimp" else editors.find_krita():
            if python is not None:
                e.python = python
            if kind == "krita" and args.kritarc is not None:
                e.kritarc = args.kritarc
            found.append(e)
    return found


# ---------------------------------------------------------------- steps


def step_backend(args, record: Record, device: str, current: bool) -> Path:
    """Returns the backend interpreter; ``current`` says the managed venv is already complete and up to date."""
    if args.backend_python:
        ok, detail = venv.import_check(args.backend_python)
        if not ok:
            raise StepError(f"{args.backend_python} cannot import the backend: {detail}")
        _say("backend", f"using {args.backend_python} ({venv.describe_torch(detail)}); nothing to do")
        return args.backend_python
    target = (args.venv or default_venv()).absolute()
    if current:
        _say("backend", f"{target} is up to date ({device}); nothing to do")
        return venv_python(target)
    existed = target.exists()
    if venv_python(target).exists():
        _say("backend", f"updating {target} ({device})")
    else:
        _say("backend", f"installing into {target} ({device}); this takes a few minutes the first time")
    record.make_dirs(target.parent)
    if not existed:
        record.add_path(target)
    started = time.monotonic()
    try:
        venv.ensure_venv(target, device, log=print)
    except subprocess.CalledProcessError as exc:
        raise StepError(f"command failed with exit code {exc.returncode}: {' '.join(map(str, exc.cmd))}") from exc
    except RuntimeError as exc:
        raise StepError(str(exc)) from exc
    _say("backend", f"done in {time.monotonic() - started:.0f} s")
    return venv_python(target)


def step_models(models_dir: Path, python: Path | None, record: Record) -> None:
    try:
        manifest_file = models.manifest_path(models_dir)
        files = models.default_files(models.load_manifest(manifest_file))
    except ValueError as exc:
        raise StepError(str(exc)) from exc
    problems = []
    fetched = 0
    for f in files:
        problem = models.verify(models_dir, f)
        if problem is None:
            continue
        dest = models_dir / f.path
        if not f.url:
            if dest.is_file() and f.sha256 is None:
                problems.append(f"{dest}: {problem}")
            else:
                problems.append(f"{dest}: {problem}; it has no download URL: restore it "
                                f"(git checkout -- models/{f.path}) or point --models-dir at a good copy")
            continue
        if f.sha256 is None:
            problems.append(f"{f.path}: the manifest gives a URL but no sha256; refusing an unverifiable download")
            continue
        if python is None:
            problems.append(f"{f.path}: {problem}, and no backend Python to download it with")
            continue
        _say("models", f"downloading {f.url} -> {dest} ({problem})")
        cmd = [str(python), "-m", "installer.download", f.url, str(dest), "--sha256", f.sha256]
        if f.size is not None:
            cmd += ["--size", str(f.size)]
        record.make_dirs(dest.parent)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        out = subprocess.run(cmd, env=env)
        if out.returncode:
            problems.append(f"{f.path}: download failed (see above); rerun to resume")
            continue
        record.add_path(dest)
        fetched += 1
    if problems:
        raise StepError("; ".join(problems))
    _say("models", f"{len(files)} file(s) verified in {models_dir}" + (f", {fetched} downloaded" if fetched
                                                                        else "; nothing to do"))


def step_config(args, record: Record, python: Path, models_dir: Path, device: str,
                found: list[editors.Editor]) -> dict:
    path = config_path()
    token_file = state_dir() / cfg.TOKEN_NAME
    flatpak = any(e.flatpak for e in found)
    # A Flatpak editor cannot see the host's $XDG_RUNTIME_DIR/dfimat socket; loopback TCP crosses the sandbox.
    endpoint = args.endpoint or (TCP_ENDPOINT if flatpak else default_endpoint())
    venv_dir = args.backend_python.absolute().parent.parent if args.backend_python else (args.venv or default_venv()).absolute()
    conf = cfg.build_config(endpoint=endpoint, token_file=token_file.absolute(), venv=venv_dir,
                            python=Path(python).absolute(), models_dir=models_dir.absolute(), device=device,
                            version=project_version())
    record.make_dirs(path.parent)
    record.add_path(token_file)
    token_action = cfg.ensure_token(token_file)
    record.add_path(path)
    wrote = cfg.write_config(path, conf)
    # Inside a Flatpak, $XDG_CONFIG_HOME is the app's own folder: put a copy of the config where it looks.
    mirrors = []
    for e in found:
        if e.flatpak:
            mirror = Path.home() / ".var" / "app" / e.flatpak / "config" / "dfimat" / "config.json"
            record.make_dirs(mirror.parent)
            record.add_path(mirror)
            if cfg.write_config(mirror, conf):
                mirrors.append(str(mirror))
    changes = [f"token {token_action}"] if token_action else []
    changes += [f"wrote {path}"] if wrote else []
    changes += [f"wrote {m}" for m in mirrors]
    _say("config", "; ".join(changes) if changes else f"{path} up to date; nothing to do")
    return conf


def step_editor(editor: editors.Editor, record: Record, pip_python: Path | None) -> None:
    step = editor.kind
    for note in editor.notes:
        _say(step, f"{editor.label}: {note}")
    if editor.plugins_root == Path():
        raise StepError(f"{editor.label}: unusable ({'; '.join(editor.notes)})")
    record.make_dirs(editor.plugins_root)
    dest = editor.plugins_root / plugins.PLUGIN_NAME
    record.add_path(dest)
    try:
        if editor.kind == "gimp":
            dest, changed = plugins.deploy_gimp_plugin(editor.plugins_root)
        else:
            desktop = editor.plugins_root / plugins.KRITA_DESKTOP.name
            record.add_path(desktop)
            actions = plugins.krita_actions_file(editor.plugins_root)
            record.make_dirs(actions.parent)
            record.add_path(actions)
            rc_before = editor.kritarc is not None and plugins.kritarc_enabled(editor.kritarc)
            dest, changed = plugins.deploy_krita_plugin(editor.plugins_root, editor.kritarc)
            if editor.kritarc is not None and not rc_before:
                record.add_kritarc_key(editor.kritarc, *plugins.KRITARC_KEY)
    except OSError as exc:
        raise StepError(f"{editor.label}: could not install into {editor.plugins_root}: {exc}") from exc
    vendor = dest / plugins.VENDOR
    note = ""
    has_zmq = editors.zmq_importable(editor.python, vendor)
    if has_zmq is False or (has_zmq is None and editor.python.version):
        if (vendor / "zmq").is_dir() and has_zmq is None:
            note = f"; pyzmq already vendored for Python {editor.python.version}"
        elif pip_python is None:
            raise StepError(f"{editor.label}: its Python lacks pyzmq; {editors.zmq_hint(editor)}")
        else:
            _say(step, f"vendoring pyzmq for Python {editor.python.version} into {vendor}")
            try:
                editors.vendor_pyzmq(pip_python, editor.python, vendor)
            except RuntimeError as exc:
                raise StepError(f"{editor.label}: could not vendor pyzmq ({exc}); {editors.zmq_hint(editor)}") from exc
            changed.append(vendor / "zmq")
    elif has_zmq is None:
        note = f"; {editor.python.note or 'cannot check its Python'}"
    ok, detail = editors.import_probe(editor.python, dest)
    if ok is False:
        raise StepError(f"{editor.label}: the installed plug-in does not import in {editor.python.describe()}: {detail}")
    names = ", ".join(sorted(str(c.relative_to(dest)) if c.is_relative_to(dest) else c.name for c in changed)[:4])
    what = (f"updated {len(changed)} file(s) in {dest} ({names}{', …' if len(changed) > 4 else ''})" if changed
            else f"{dest} up to date; nothing to do")
    _say(step, f"{editor.label}: {what}{note}")


def run_demo(python: Path, models_dir: Path) -> None:
    out = Path.cwd() / DEMO_OUT
    cmd = [str(python), "-m", "backend", "matte", str(DEMO_IMAGE), "--box", ",".join(map(str, DEMO_BOX)), "-o", str(out)]
    _say("demo", " ".join(cmd))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["DFIMAT_MODELS_DIR"] = str(models_dir)
    started = time.monotonic()
    # Run outside the repository so `-m backend` imports the venv's installed copy, not the source tree.
    result = subprocess.run(cmd, env=env, cwd=python.parent)
    if result.returncode or not out.is_file():
        raise StepError(f"the demo command failed (exit code {result.returncode}); run install.py --check")
    stats = subprocess.run([str(python), "-c", "import sys, cv2; a = cv2.imread(sys.argv[1], 0); "
                            "print(f'{a.shape[1]}x{a.shape[0]}, {(a > 127).mean():.1%} foreground')", str(out)],
                           capture_output=True, text=True, env=env)
    _say("demo", f"wrote {out} in {time.monotonic() - started:.1f} s ({stats.stdout.strip() or 'unreadable'})")


# ---------------------------------------------------------------- modes


def uninstall(args) -> int:
    record = Record()
    if not record.path.exists():
        print(f"nothing to uninstall: no install record at {record.path}")
        return 0
    if not args.yes and not _confirm(f"Remove the {len(record.paths)} paths listed in {record.path}?"):
        return 1
    removed = remove_owned(record)
    record.forget()
    marker_path().unlink(missing_ok=True)
    for s in sorted(record.data["dirs"], key=len, reverse=True):
        try:
            Path(s).rmdir()
        except OSError:
            pass
    for s in removed:
        print(f"removed {s}")
    print(f"uninstalled ({len(removed)} items)")
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} Not a terminal: pass --yes to proceed.", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def install(args) -> int:
    device = args.device or venv.detect_device()
    models_dir = (args.models_dir or models.REPO_MODELS).absolute()
    found = find_editors(args)
    if not args.yes and not _confirm(
        f"Install the DFIMat backend ({device}) into {args.backend_python or args.venv or default_venv()}, "
        f"and plug-ins for: {', '.join(e.label for e in found) or 'no editor'}?"
    ):
        return 1
    record = Record()
    failures: list[str] = []
    marker = marker_path()

    def mark_incomplete() -> None:
        if not marker.exists():
            record.make_dirs(marker.parent)
            marker.write_text("install.py has not finished; rerun it to repair\n", encoding="utf-8")

    # Marked before any step and removed only after all succeed: a run killed anywhere in between (even one
    # that only copies plug-ins) is reported by --check and redone by the next run.
    mark_incomplete()
    python: Path | None = None
    current = args.backend_python is None and venv.is_current((args.venv or default_venv()).absolute(), device)
    try:
        python = step_backend(args, record, device, current)
    except StepError as exc:
        failures.append(f"backend: {exc}")
    try:
        step_models(models_dir, python, record)
    except StepError as exc:
        failures.append(f"models: {exc}")
    if python is not None:
        step_config(args, record, python, models_dir, device, found)
    if not args.no_editors:
        for kind, name, skip, flag in (("gimp", "GIMP 3", args.no_gimp, "--gimp-dir"),
                                       ("krita", "Krita", args.no_krita, "--krita-dir")):
            if not skip and not any(e.kind == kind for e in found):
                _say(kind, f"{name} not found (pass {flag} if it is installed elsewhere); nothing to do")
    for editor in found:
        try:
            step_editor(editor, record, python)
        except StepError as exc:
            failures.append(f"{editor.kind}: {exc}")
    if failures:
        mark_incomplete()
        print("\nInstall incomplete:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        print("Fix the above and rerun install.py (finished steps are skipped).", file=sys.stderr)
        return 1
    marker.unlink(missing_ok=True)
    print("Installed. Diagnose any time with: python install.py --check")
    if not args.no_editors and not found and not (args.no_gimp and args.no_krita):
        print("\nNo editor was found, so no plug-in was installed.")
        print("\n".join(check.GET_AN_EDITOR))
    if args.demo and python is not None:
        try:
            run_demo(python, models_dir)
        except StepError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Absolute now: subprocesses run from other folders.
    for name in ("venv", "backend_python", "models_dir", "gimp_dir", "krita_dir", "kritarc"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).expanduser().absolute())
    if args.device == "cuda" and args.backend_python:
        print("--gpu applies to the managed venv only", file=sys.stderr)
        return 2
    try:
        if args.uninstall:
            return uninstall(args)
        if args.check:
            found = find_editors(args)
            rows = check.diagnose(found, args.models_dir.absolute() if args.models_dir else None,
                                  editors_wanted=not args.no_editors)
            check.print_table(rows)
            return 1 if check.failed(rows) else 0
        return install(args)
    except ValueError as exc:
        print(f"install.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; rerun install.py to finish (it repairs a half-done install)", file=sys.stderr)
        return 130
