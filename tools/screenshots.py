"""Screenshots of the DFIMat results in the real editors (GIMP 3.0.4 and Krita 5.1.5) under Xvfb, for the README.

    .venv/bin/python tools/screenshots.py [--weights CKPT] [--out-dir docs/img] [--only gimp|krita]

What it does (see docs/screenshots.md):

1. starts the real backend (``python -m backend serve`` on a free loopback port, the committed DFIMat-S weights
   unless ``--weights``) with a plug-in config + token, through the Krita tests' ``realtest.start_backend``;
2. GIMP 3.0.4 in the cached Debian 13 root (``tests/editors/sandbox.py``): the plug-in installed with
   ``install_gimp_plugin`` into a temporary HOME, ``samples/astronaut.png`` opened in the GUI under Xvfb, a
   rectangle selection around the astronaut, "DFIMat Person Mask" (``plug-in-dfimat-layer-mask``, output: layer
   mask), then a grab of the screen → ``gimp-result.png``;
3. Krita 5.1.5 in the cached Debian 12 root (the same module): the plug-in and the Krita tests' ``kth`` GUI
   harness in a temporary HOME (``realtest.prepare_gui_home``), the same photo and selection, the
   "DFIMat Select Person" action (5.1 in a window: a real transparency mask through Krita's own action), a grab
   of the screen → ``krita-result.png``.

The functions ``gimp_scene`` and ``krita_scene`` run *inside* the editors' own Pythons (GIMP's python-fu-eval,
Krita's pykrita), which is why this module imports only the standard library at the top. Outputs are overwritten,
temporary folders removed and every process started here stopped, so a rerun gives the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PHOTO = REPO / "samples" / "astronaut.png"
DEFAULT_WEIGHTS = REPO / "models" / "dfimat-s" / "dfimat-s.pt"
DEFAULT_OUT = REPO / "docs" / "img"
# A small virtual screen keeps the PNGs small; both editors still show their canvas, layers and dockers.
SCREEN = (1280, 800)
MAX_BYTES = 300_000
GIMP_PROCEDURE = "plug-in-dfimat-layer-mask"
EDITOR_TIMEOUT_S = 600
# The name of the generated one-line module the Krita harness imports (it calls ``<module>.main()``).
KRITA_SHIM = "dfimat_screenshot_shim"


class ShotError(RuntimeError):
    """A missing piece or a failed step; the message names it."""


# --- inside GIMP (python-fu-eval, GIMP's own Python 3 with python3-gi) -------------------------------------------


def _xdotool(*args: str) -> str:
    out = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=30)
    return out.stdout


def gimp_scene() -> None:
    """Open the photo in a GIMP window, select around the person, run the plug-in, grab the screen."""
    import gi

    gi.require_version("Gimp", "3.0")
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk, Gimp, Gio

    params = json.loads(Path(os.environ["DFIMAT_SHOT_PARAMS"]).read_text())
    out = Path(params["out"])
    result: dict = {"ok": False}
    image = display = None
    try:
        image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(params["photo"]))
        layer = image.get_layers()[0]
        display = Gimp.Display.new(image)
        x0, y0, x1, y1 = params["box"]
        image.select_rectangle(Gimp.ChannelOps.REPLACE, x0, y0, x1 - x0, y1 - y0)
        proc = Gimp.get_pdb().lookup_procedure(params["procedure"])
        if proc is None:
            raise RuntimeError(f"the DFIMat plug-in is not registered in GIMP ({params['procedure']} missing)")
        cfg = proc.create_config()
        cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        cfg.set_property("image", image)
        cfg.set_core_object_array("drawables", [layer])
        cfg.set_property("output", "mask")
        started = time.monotonic()
        values = proc.run(cfg)
        result["seconds"] = round(time.monotonic() - started, 2)
        if values.index(0) != Gimp.PDBStatusType.SUCCESS:
            err = values.index(1) if values.length() > 1 else None
            raise RuntimeError(f"the plug-in failed: {getattr(err, 'message', None) or err}")
        result["has_mask"] = layer.get_mask() is not None
        # The marching ants would hide the mask's edge; the result is the mask, not the box.
        Gimp.Selection.none(image)
        Gimp.displays_flush()
        time.sleep(1.0)
        # No window manager under Xvfb: size the image window to the screen ourselves, then View → Zoom → Fit.
        windows = _xdotool("search", "--onlyvisible", "--name", r"\[.*\].*GIMP").split()
        if windows:
            width, height = params["screen"]
            _xdotool("windowmove", windows[-1], "0", "0")
            _xdotool("windowsize", windows[-1], str(width), str(height))
            time.sleep(1.5)
            _xdotool("windowfocus", "--sync", windows[-1])
            _xdotool("key", "--clearmodifiers", "shift+ctrl+j")
            # The pointer sits on the canvas after focusing, where GIMP draws the brush outline over the result.
            _xdotool("mousemove", str(width - 1), str(height - 1))
            geometry = _xdotool("getwindowgeometry", "--shell", windows[-1])
            result["window"] = dict(line.split("=", 1) for line in geometry.split() if "=" in line)
        result["windows"] = windows
        Gimp.displays_flush()
        time.sleep(3.0)
        Gdk.init([])
        root = Gdk.get_default_root_window()
        shot = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
        if shot is None:
            raise RuntimeError("Gdk could not read the Xvfb screen")
        shot.savev(str(out / "gimp-screen.png"), "png", [], [])
        result["ok"] = True
    except Exception:
        result["error"] = traceback.format_exc()
    finally:
        (out / "result.json").write_text(json.dumps(result, indent=1))
        if image is not None:
            # A clean image closes without a save question, so --quit can end GIMP.
            image.clean_all()
        if display is not None:
            display.delete()


# --- inside Krita (pykrita, run by the tests' kth harness plug-in) -------------------------------------------------


def krita_scene() -> dict:
    """Open the photo in a Krita window, select around the person, trigger the action, grab the screen."""
    from dfimat import document
    from dfimat.docker import DFIMatDocker
    from gui_roundtrip import wait_idle
    from kdoc import open_photo
    from krita import Krita, Selection
    from PyQt5.QtCore import QCoreApplication, QEventLoop
    from PyQt5.QtGui import QCursor
    from PyQt5.QtWidgets import QApplication, QDockWidget

    def settle(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
            time.sleep(0.02)

    params = json.loads(Path(os.environ["KTH_PARAMS"]).read_text())
    out = Path(params["out"])
    report: dict = {"ok": False}
    try:
        app = Krita.instance()
        report["krita"] = app.version()
        window = app.activeWindow()
        qwin = window.qwindow()
        width, height = params["screen"]
        qwin.setGeometry(0, 0, width, height)
        window, doc, node = open_photo(app, params["photo"])
        docks = [d for d in qwin.findChildren(QDockWidget) if d.windowTitle() == "DFIMat"]
        if not docks:
            raise RuntimeError("the DFIMat docker is missing: the plug-in did not load")
        docker = docks[0]
        docker.show()
        docker.output.setCurrentIndex(docker.output.findData("mask"))
        x0, y0, x1, y1 = params["box"]
        sel = Selection()
        sel.select(x0, y0, x1 - x0, y1 - y0, 255)
        doc.setSelection(sel)
        action = app.action("dfimat_select_person")
        if action is None:
            raise RuntimeError("the action dfimat_select_person is missing: the plug-in did not load")
        action.trigger()
        wait_idle(DFIMatDocker.controller, "select", report)
        report["mask_types"] = [m.type() for m in document.dfimat_masks(node)]
        # The plug-in gives the user's selection back; the screenshot is about the mask, so drop the ants.
        for name in ("deselect", "zoom_to_fit"):
            if app.action(name) is not None:
                app.action(name).trigger()
        # Over the canvas Krita draws the brush outline on top of the result: park the pointer in a corner.
        QCursor.setPos(width - 1, height - 1)
        settle(3.0)
        frame = qwin.frameGeometry()
        report["window"] = {"X": frame.x(), "Y": frame.y(), "WIDTH": frame.width(), "HEIGHT": frame.height()}
        # A grab of the X screen (not QWidget.grab): it includes the OpenGL canvas as displayed.
        if not QApplication.primaryScreen().grabWindow(0).save(str(out / "krita-screen.png"), "PNG"):
            raise RuntimeError("Qt could not save the screen grab")
        report["ok"] = True
    except Exception:
        report["error"] = traceback.format_exc()
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


# --- on the host (the repo's .venv) --------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[screenshots] {message}", flush=True)


def _host_imports() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def shrink_png(raw: Path, dest: Path, window: dict | None) -> tuple[int, int, int]:
    """Crop the screen grab to the editor's window and store it as a palette PNG of at most MAX_BYTES."""
    from PIL import Image

    shot = Image.open(raw).convert("RGB")
    if window:
        x, y = max(0, int(window["X"])), max(0, int(window["Y"]))
        right = min(shot.width, x + int(window["WIDTH"]))
        bottom = min(shot.height, y + int(window["HEIGHT"]))
        if right - x > 100 and bottom - y > 100:
            shot = shot.crop((x, y, right, bottom))
    scale = 1.0
    while True:
        size = (round(shot.width * scale), round(shot.height * scale))
        frame = shot if scale == 1.0 else shot.resize(size, Image.LANCZOS)
        # 256 colours are plenty for a UI with one photo and keep the file a fraction of a truecolour PNG.
        frame.quantize(256, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
        if dest.stat().st_size <= MAX_BYTES or scale < 0.3:
            return frame.width, frame.height, dest.stat().st_size
        scale *= 0.85


def _check_screen(raw: Path, editor: str) -> None:
    """An all-one-colour grab means the editor window never painted: refuse it rather than publish it."""
    from PIL import Image

    extrema = Image.open(raw).convert("L").getextrema()
    if extrema[1] - extrema[0] < 16:
        raise ShotError(f"{editor}: the screen grab is blank ({raw}); the window did not paint")


def shoot_gimp(backend_config: Path, box: tuple[int, int, int, int], work: Path, dest: Path) -> tuple[int, int, int]:
    _host_imports()
    from install import install_gimp_plugin
    from tests.editors import debian13

    reason = debian13.skip_reason()
    if reason:
        raise ShotError(f"GIMP 3.0.4: {reason}")
    _log("GIMP: Debian 13 root (built once, cached; tests/editors/sandbox.py says where)")
    try:
        debian13.ensure_root()
    except RuntimeError as exc:
        raise ShotError(f"GIMP 3.0.4: the Debian 13 root could not be built: {exc}") from exc
    home = work / "gimp-home"
    gimp_dir = home / ".config" / "GIMP" / "3.0"
    install_gimp_plugin(gimp_dir / "plug-ins")
    # The first-start welcome dialog would cover the image window.
    (gimp_dir / "gimprc").write_text("(show-welcome-dialog no)\n")
    out = work / "gimp-out"
    out.mkdir()
    params = work / "gimp-params.json"
    params.write_text(json.dumps({"photo": str(PHOTO), "box": list(box), "out": str(out),
                                  "procedure": GIMP_PROCEDURE, "screen": list(SCREEN)}))
    script = f"import sys\nsys.path.insert(0, {str(TOOLS)!r})\nimport screenshots\nscreenshots.gimp_scene()\n"
    _log("GIMP: opening the photo under Xvfb and running DFIMat Person Mask")
    try:
        run = debian13.run_in_root(
            ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24", "gimp-3.0", "--no-splash",
             "--batch-interpreter=python-fu-eval", "-b", "-", "--quit"],
            binds=[work, TOOLS, PHOTO.parent, backend_config.parent],
            env={"HOME": str(home), "DFIMAT_CONFIG": str(backend_config), "DFIMAT_SHOT_PARAMS": str(params)},
            input=script, timeout=EDITOR_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        # bwrap runs with --die-with-parent and its own pid namespace: GIMP and Xvfb ended with it.
        raise ShotError(f"GIMP did not finish within {EDITOR_TIMEOUT_S} s") from exc
    result_file = out / "result.json"
    if not result_file.is_file():
        raise ShotError(f"GIMP wrote no result (exit {run.returncode}):\n{run.stderr[-2000:]}")
    result = json.loads(result_file.read_text())
    if not result.get("ok"):
        raise ShotError(f"GIMP: {result.get('error')}\n{run.stderr[-1500:]}")
    if not result.get("has_mask"):
        raise ShotError("GIMP: the plug-in succeeded but the layer has no mask")
    _check_screen(out / "gimp-screen.png", "GIMP")
    _log(f"GIMP: plug-in took {result.get('seconds')} s")
    return shrink_png(out / "gimp-screen.png", dest, result.get("window"))


def shoot_krita(backend_config: Path, box: tuple[int, int, int, int], work: Path, dest: Path) -> tuple[int, int, int]:
    _host_imports()
    from tests.editors import sandbox
    from tests.krita_harness import realtest

    reason = sandbox.BOOKWORM.skip_reason()
    if reason:
        raise ShotError(f"Krita 5.1: {reason}")
    _log("Krita: Debian 12 root (built once, cached; tests/editors/sandbox.py says where)")
    try:
        sandbox.BOOKWORM.ensure_root()
    except RuntimeError as exc:
        raise ShotError(f"Krita 5.1: the Debian 12 root could not be built: {exc}") from exc
    home = work / "krita-home"
    realtest.prepare_gui_home(home)
    out = work / "krita-out"
    out.mkdir()
    shim_dir = work / "krita-shim"
    shim_dir.mkdir()
    (shim_dir / f"{KRITA_SHIM}.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TOOLS)!r})\nfrom screenshots import krita_scene as main  # noqa\n")
    params = work / "krita-params.json"
    params.write_text(json.dumps({"photo": str(PHOTO), "box": list(box), "out": str(out), "screen": list(SCREEN)}))
    env = realtest.gui_env(home, params, backend_config, out / "kth.json")
    env["KTH_MODULE"] = KRITA_SHIM
    env["PYTHONPATH"] = f"{realtest.HARNESS}{os.pathsep}{shim_dir}"
    _log("Krita: opening the photo under Xvfb and running DFIMat Select Person")
    try:
        # bwrap runs with --die-with-parent and its own pid namespace: a timeout ends Xvfb and Krita with it.
        run = sandbox.BOOKWORM.run_in_root(
            [*sandbox.xvfb_run(f"{SCREEN[0]}x{SCREEN[1]}x24"), "krita", "--nosplash"],
            binds=[work, TOOLS, PHOTO.parent, backend_config.parent, realtest.HARNESS], env=env,
            timeout=EDITOR_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ShotError(f"Krita did not finish within {EDITOR_TIMEOUT_S} s") from exc
    report_file = out / "report.json"
    if not report_file.is_file():
        raise ShotError(f"Krita wrote no report (exit {run.returncode}); is the kth harness or the DFIMat plug-in "
                        f"broken?\n{run.stderr[-2000:]}")
    report = json.loads(report_file.read_text())
    if not report.get("ok"):
        raise ShotError(f"Krita: {report.get('error')}")
    if not report.get("mask_types"):
        raise ShotError(f"Krita: no DFIMat mask on the layer ({report.get('select_message')})")
    _check_screen(out / "krita-screen.png", "Krita")
    _log(f"Krita {report.get('krita')}: {report.get('mask_types')} in {report.get('select_s')} s")
    return shrink_png(out / "krita-screen.png", dest, report.get("window"))


def _ensure_venv() -> None:
    """The backend runs with this interpreter (realtest.start_backend uses sys.executable): make it the venv's."""
    if Path(sys.prefix).resolve() == (REPO / ".venv").resolve():
        return
    if not VENV_PYTHON.is_file():
        raise ShotError(f"missing {VENV_PYTHON}: create the dev venv first (python tools/run_tests.py does)")
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="backend checkpoint (default: %(default)s)")
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the PNGs go (default: %(default)s)")
    ap.add_argument("--only", choices=("gimp", "krita"), help="one editor only")
    args = ap.parse_args(argv)
    try:
        _ensure_venv()
        if not sys.platform.startswith("linux"):
            raise ShotError("screenshots need Linux (Xvfb, the Debian editors)")
        if not args.weights.is_file():
            raise ShotError(f"model weights missing: {args.weights} (train/commit DFIMat-S or pass --weights)")
        if not PHOTO.is_file():
            raise ShotError(f"sample photo missing: {PHOTO}")
        _host_imports()
        from installer.cli import DEMO_BOX
        from tests.krita_harness import realtest

        args.out_dir.mkdir(parents=True, exist_ok=True)
        editors = [args.only] if args.only else ["gimp", "krita"]
        written: list[str] = []
        with tempfile.TemporaryDirectory(prefix="dfimat-shots-") as tmp:
            work = Path(tmp)
            # start_backend serves the checkpoint it finds at REAL_WEIGHTS; point it at ours.
            realtest.REAL_WEIGHTS = args.weights.resolve()
            _log(f"starting the backend with {args.weights}")
            try:
                backend = realtest.start_backend(work)
            except RuntimeError as exc:
                raise ShotError(f"backend: {exc}") from exc
            try:
                _log(f"backend ready at {backend.endpoint}")
                for editor in editors:
                    dest = args.out_dir / f"{editor}-result.png"
                    shoot = shoot_gimp if editor == "gimp" else shoot_krita
                    width, height, size = shoot(backend.config, DEMO_BOX, work, dest)
                    written.append(f"{dest} ({width}x{height}, {size // 1024} KB)")
            finally:
                backend.stop()
        for line in written:
            print(f"wrote {line}")
        return 0
    except ShotError as exc:
        print(f"screenshots: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
