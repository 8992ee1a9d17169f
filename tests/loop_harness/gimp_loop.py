"""Runs inside a real GIMP 3 (python-fu-eval batch, GUI under Xvfb): the refinement loop as a user does it.

Not a pytest module: tests/test_gimp_loop.py feeds this file to GIMP and reads what it writes. Input:
``$LOOP_SCENARIO`` (JSON: photo, box, the stroke line, output folder), ``$DFIMAT_CONFIG`` (the rule backend).
Output: ``result.json`` and raw "Y u8" masks in the output folder.

The story: a box selection and a first run (through the PDB, like a script would); Select → None and a pencil
line on a "DFIMat -" layer, which stays the active layer; the second run through GIMP's GUI — the DFIMat shortcut
pressed in the image window (xdotool), the dialog's OK pressed with Alt+O; one Ctrl+Z; a run with a channel
active; the matte view opened and closed.
"""

import json
import os
import subprocess
import time
import traceback
from pathlib import Path

import gi
import numpy as np

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

SCENARIO = json.loads(Path(os.environ["LOOP_SCENARIO"]).read_text())
OUT = Path(SCENARIO["out"])
RESULT: dict = {"steps": {}}
T0 = time.monotonic()


def log(step: str, **info) -> None:
    RESULT["steps"][step] = {"t": round(time.monotonic() - T0, 2), **info}
    (OUT / "result.json").write_text(json.dumps(RESULT, indent=1))


def run_proc(name: str, image, drawables, **args):
    proc = Gimp.get_pdb().lookup_procedure(name)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", drawables)
    for key, value in args.items():
        cfg.set_property(key, value)
    result = proc.run(cfg)
    ok = result.index(0) == Gimp.PDBStatusType.SUCCESS
    err = None if ok or result.length() < 2 else result.index(1)
    return ok, "" if ok else (getattr(err, "message", None) or str(err))


def read_mask(layer):
    mask = layer.get_mask()
    if mask is None:
        return None
    w, h = mask.get_width(), mask.get_height()
    data = mask.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "Y u8", Gegl.AbyssPolicy.CLAMP)
    return np.frombuffer(bytes(data), np.uint8).reshape(h, w)


def save(name: str, array) -> None:
    (OUT / name).write_bytes(np.ascontiguousarray(array, np.uint8).tobytes())


def image_window() -> str:
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", r"\[.*\].*GIMP"],
                           capture_output=True, text=True, timeout=10)
    windows = found.stdout.split()
    if not windows:
        raise RuntimeError(f"no GIMP image window: {found.stderr}")
    return windows[-1]


def press(keys: str) -> None:
    """Keys pressed in the image window, as a user does (no window manager under Xvfb: focus it directly)."""
    subprocess.run(["xdotool", "windowfocus", "--sync", image_window()], check=True, timeout=10)
    time.sleep(0.3)
    subprocess.run(["xdotool", "key", "--clearmodifiers", keys], check=True, timeout=10)


def press_ok(title: str, seconds: float = 30.0) -> bool:
    """Alt+O in the plug-in's dialog once it shows."""
    found = subprocess.run(["timeout", str(seconds), "xdotool", "search", "--sync", "--onlyvisible", "--name", title],
                           capture_output=True, text=True)
    windows = found.stdout.split()
    if not windows:
        return False
    time.sleep(0.5)
    subprocess.run(["xdotool", "windowfocus", "--sync", windows[0]], timeout=10)
    subprocess.run(["xdotool", "key", "alt+o"], timeout=10)
    return True


def wait_for(predicate, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def screenshot(name: str) -> None:
    """The whole X screen as a PNG, through GIMP's own screenshot plug-in (for people to look at)."""
    try:
        proc = Gimp.get_pdb().lookup_procedure("plug-in-screenshot")
        cfg = proc.create_config()
        cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        cfg.set_property("shoot-type", "screen")
        result = proc.run(cfg)
        shot = result.index(1)
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, shot, Gio.File.new_for_path(str(OUT / name)), None)
        shot.delete()
    except Exception as exc:  # a picture for people, never a reason to fail the loop
        RESULT.setdefault("screenshot_errors", []).append(f"{name}: {exc}")


def paint_stroke(image, name: str, line) -> object:
    """A "DFIMat ±" layer with one pencil line, left as the active layer (the user just painted on it)."""
    Gimp.Selection.none(image)
    stroke = Gimp.Layer.new(image, name, image.get_width(), image.get_height(), Gimp.ImageType.RGBA_IMAGE, 100,
                            Gimp.LayerMode.NORMAL)
    image.insert_layer(stroke, None, 0)
    stroke.fill(Gimp.FillType.TRANSPARENT)
    Gimp.context_set_brush_size(line["width"])
    Gimp.pencil(stroke, [float(v) for v in line["points"]])
    image.set_selected_layers([stroke])
    Gimp.displays_flush()
    return stroke


def main() -> None:
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(SCENARIO["photo"]))
    if not image.undo_is_enabled():
        image.undo_enable()  # images loaded through the PDB come with undo off; a user's image has it on
    layer = image.get_layers()[0]
    layer.set_name("photo")
    image.clean_all()
    Gimp.Display.new(image)
    Gimp.displays_flush()
    x0, y0, x1, y1 = SCENARIO["box"]

    # Round 1: a box, run as a script would.
    image.select_rectangle(Gimp.ChannelOps.REPLACE, x0, y0, x1 - x0, y1 - y0)
    started = time.monotonic()
    ok, msg = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    mask1 = read_mask(layer)
    if mask1 is not None:
        save("mask1.raw", mask1)
    log("round1", ok=ok, message=msg, seconds=round(time.monotonic() - started, 2), has_mask=mask1 is not None)

    # Paint on "DFIMat -" (selection dropped first: GIMP paints only inside it); the stroke layer stays active.
    stroke = paint_stroke(image, "DFIMat -", SCENARIO["minus"])
    log("painted", active=[d.get_name() for d in image.get_selected_drawables()])

    # Round 2 through the GUI: the shortcut in the image window, OK in the dialog, with the stroke layer active.
    # A window as wide as the screen (there is no window manager to maximise it) has room in its status bar for
    # the round's message.
    subprocess.run(["xdotool", "windowsize", image_window(), "1280", "1000"], timeout=10)
    started = time.monotonic()
    press(SCENARIO["shortcut"])
    dialog = press_ok("DFIMat Select Person")
    changed = wait_for(lambda: read_mask(layer) is not None and not np.array_equal(read_mask(layer), mask1))
    mask2 = read_mask(layer)
    save("mask2.raw", mask2)
    screenshot("after_round2.png")
    # The Edit menu names the step Ctrl+Z will take back ("Undo DFIMat Refine"): a picture for people.
    press("alt+e")
    time.sleep(0.8)
    screenshot("edit_menu.png")
    subprocess.run(["xdotool", "key", "Escape"], timeout=10)
    time.sleep(0.3)
    log("round2", dialog=dialog, changed=changed, seconds=round(time.monotonic() - started, 2),
        active=[d.get_name() for d in image.get_selected_drawables()], layers=len(image.get_layers()))

    # One Ctrl+Z takes the whole round back: the first round's mask, byte for byte.
    press("ctrl+z")
    back = wait_for(lambda: read_mask(layer) is not None and np.array_equal(read_mask(layer), mask1), 10)
    after_undo = read_mask(layer)
    log("undo_round2", mask1_back=back, stroke_kept=stroke.is_valid() and len(image.get_layers()) == 2,
        has_mask=after_undo is not None)
    press("ctrl+y")
    redone = wait_for(lambda: read_mask(layer) is not None and np.array_equal(read_mask(layer), mask2), 10)
    log("redo_round2", mask2_back=redone)

    # A channel active: the run continues the photo layer's session (a "DFIMat +" stroke adds to the matte).
    channel = Gimp.Channel.new(image, "my channel", image.get_width(), image.get_height(), 50.0,
                               Gegl.Color.new("red"))
    image.insert_channel(channel, None, 0)
    plus = paint_stroke(image, "DFIMat +", SCENARIO["plus"])
    image.set_selected_channels([channel])
    ok, msg = run_proc("plug-in-dfimat-layer-mask", image, [channel], output="mask")
    mask3 = read_mask(layer)
    save("mask3.raw", mask3)
    log("channel_round", ok=ok, message=msg, plus_kept=plus.is_valid())

    # The matte view: a separate image; the user's image gains no layer, no undo step and stays as it was.
    images_before = len(Gimp.get_images())
    dirty_before = image.is_dirty()
    layers_before = [x.get_name() for x in image.get_layers()]
    ok_open, msg_open = run_proc("plug-in-dfimat-view-matte", image, [plus], mode="solid")
    views = [im for im in Gimp.get_images() if im.get_parasite("dfimat-view") is not None]
    view_info = {}
    if views:
        view = views[0]
        view_info = {"layers": [x.get_name() for x in view.get_layers()], "dirty": view.is_dirty(),
                     "undo": view.undo_is_enabled()}
        # The composite where the matte is 0 is the view's colour (black by default).
        picked = view.pick_color(view.get_layers(), 2.0, 2.0, True, False, 0.0)
        color = picked[1] if isinstance(picked, tuple) else picked
        view_info["corner_rgba"] = [round(v, 3) for v in color.get_rgba()]
    screenshot("view_open.png")
    ok_close, msg_close = run_proc("plug-in-dfimat-view-matte", image, [plus], mode="solid")
    log("view", opened=ok_open, open_message=msg_open, views=len(views), view=view_info,
        closed=ok_close, close_message=msg_close, images_before=images_before,
        images_after=len(Gimp.get_images()), dirty_unchanged=image.is_dirty() == dirty_before,
        layers_unchanged=[x.get_name() for x in image.get_layers()] == layers_before)


try:
    main()
except Exception:
    RESULT["error"] = traceback.format_exc()
    (OUT / "result.json").write_text(json.dumps(RESULT, indent=1))
