"""Runs inside a real GIMP 3 (python-fu-eval batch, GUI under Xvfb) and drives the DFIMat plug-in.

Not a pytest module: tests/test_gimp_real.py feeds this file to GIMP's ``python-fu-eval`` and reads what it
writes. Input: ``$DFIMAT_SCENARIO`` (JSON: photo, person box in layer coordinates, padding, output folder, the
person's mask as raw bytes, a line across another person as (row, x0, x1)) and ``$DFIMAT_CONFIG`` (the plug-in's
install config, briefly pointed at a wrong token for the error step). Output: ``result.json`` plus raw "Y u8" masks in the output folder. Uses numpy from
Debian's python3-numpy (only here, in the test driver; the plug-in itself never imports it).
"""

import json
import os
import subprocess
import threading
import time
import traceback
from pathlib import Path

import gi
import numpy as np

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

SCENARIO = json.loads(Path(os.environ["DFIMAT_SCENARIO"]).read_text())
OUT = Path(SCENARIO["out"])
RESULT: dict = {"steps": []}


def log(step: str, **info) -> None:
    RESULT["steps"].append({"step": step, "t": round(time.monotonic() - T0, 2), **info})
    (OUT / "result.json").write_text(json.dumps(RESULT, indent=1))


def run_proc(name: str, image, drawables, **args):
    proc = Gimp.get_pdb().lookup_procedure(name)
    if proc is None:
        raise RuntimeError(f"procedure {name} is not registered")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", drawables)
    for key, value in args.items():
        cfg.set_property(key, value)
    start = time.monotonic()
    result = proc.run(cfg)
    status = result.index(0)
    message = ""
    if status != Gimp.PDBStatusType.SUCCESS:
        err = result.index(1) if result.length() > 1 else None
        message = getattr(err, "message", None) or str(err)
    return status == Gimp.PDBStatusType.SUCCESS, message, round(time.monotonic() - start, 2)


def read_mask(layer):
    mask = layer.get_mask()
    if mask is None:
        return None
    w, h = mask.get_width(), mask.get_height()
    buf = mask.get_buffer()
    data = buf.get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "Y u8", Gegl.AbyssPolicy.CLAMP)
    return np.frombuffer(bytes(data), np.uint8).reshape(h, w)


def save(name: str, array) -> None:
    (OUT / name).write_bytes(np.ascontiguousarray(array, np.uint8).tobytes())


def press_undo() -> dict:
    """Edit → Undo as a user does it: Ctrl+Z in the image window (the PDB has no undo call)."""
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", r"\[.*\].*GIMP"],
                           capture_output=True, text=True, timeout=10)
    windows = found.stdout.split()
    if not windows:
        raise RuntimeError(f"no GIMP image window found: {found.stderr}")
    # There is no window manager under Xvfb: give the image window the keyboard focus directly.
    subprocess.run(["xdotool", "windowfocus", "--sync", windows[-1]], check=True, timeout=10)
    time.sleep(0.3)
    subprocess.run(["xdotool", "key", "--clearmodifiers", "ctrl+z"], check=True, timeout=10)
    focus = subprocess.run(["xdotool", "getwindowfocus", "getwindowname"], capture_output=True, text=True, timeout=10)
    return {"windows": windows, "focus": focus.stdout.strip()}


def answer_dialog(title: str, log_to: list) -> None:
    """Press OK (Alt+O) in the plug-in's dialog once it shows; Escape after 20 s so a stuck dialog cannot hang."""
    found = subprocess.run(["timeout", "40", "xdotool", "search", "--sync", "--onlyvisible", "--name", title],
                           capture_output=True, text=True)
    windows = found.stdout.split()
    log_to.append(f"dialog windows: {windows}")
    if windows:
        time.sleep(0.5)
        subprocess.run(["xdotool", "windowfocus", "--sync", windows[0]], timeout=10)
        subprocess.run(["xdotool", "key", "alt+o"], timeout=10)
        time.sleep(20)
        still = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title], capture_output=True, text=True)
        if still.stdout.split():
            subprocess.run(["xdotool", "windowfocus", "--sync", still.stdout.split()[0]], timeout=10)
            subprocess.run(["xdotool", "key", "Escape"], timeout=10)


def wait_for(predicate, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def stroke_line(alpha1, gt, box):
    """Where a user would paint "DFIMat -": over a false-positive blob if there is one, else across the legs.

    Returns (row, x0, x1) in layer coordinates.
    """
    fp = (alpha1 >= 128) & (gt == 0)
    x0, y0, x1, y1 = box
    if fp.sum() >= 300:
        row = int(np.argmax(fp.sum(axis=1)))
        line = fp[row]
    else:
        row = int(y0 + 0.75 * (y1 - y0))
        line = alpha1[row] >= 128
    return (row, *middle_of_longest_run(line))


def middle_of_longest_run(line) -> tuple[int, int]:
    """(x0, x1): the middle 60 % of the longest run of True in a row."""
    best, start, best_span = 0, None, (0, 0)
    for x, on in enumerate(list(line) + [False]):
        if on and start is None:
            start = x
        elif not on and start is not None:
            if x - start > best:
                best, best_span = x - start, (start, x)
            start = None
    a, b = best_span
    shrink = (b - a) // 5
    return a + shrink, max(a + shrink + 2, b - shrink)


def paint_negative_stroke(image, layer, row: int, x0: int, x1: int, width: int):
    """A "DFIMat -" layer painted with the pencil tool like a user would (canvas = layer + offset).

    GIMP paints only inside the selection, so, like a user, drop the selection first (Select → None); the box
    stays in the backend session.
    """
    Gimp.Selection.none(image)
    ox, oy = layer.get_offsets()[1:]
    stroke = Gimp.Layer.new(image, "DFIMat -", image.get_width(), image.get_height(),
                            Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
    image.insert_layer(stroke, None, 0)
    stroke.fill(Gimp.FillType.TRANSPARENT)
    Gimp.context_set_brush_size(width)
    Gimp.pencil(stroke, [float(x0 + ox), float(row + oy), float(x1 + ox), float(row + oy)])
    image.set_selected_layers([layer])
    return stroke


def menus(names) -> dict:
    """Menu label and menu paths of each procedure, as GIMP registered them."""
    out = {}
    for name in names:
        proc = Gimp.get_pdb().lookup_procedure(name)
        out[name] = {"label": proc.get_menu_label(), "paths": list(proc.get_menu_paths())}
    return out


def run_with_wrong_token(image, layer) -> tuple:
    """Run the plug-in while its install config names a token the backend does not know (another install)."""
    config = Path(os.environ["DFIMAT_CONFIG"])
    original = config.read_text()
    wrong = OUT / "wrong-token"
    wrong.write_text("00" * 16 + "\n")
    wrong.chmod(0o600)
    config.write_text(json.dumps({**json.loads(original), "token_file": str(wrong)}))
    try:
        return run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    finally:
        config.write_text(original)


def select_box(image) -> None:
    x0, y0, x1, y1 = SCENARIO["box"]
    pad_x, pad_y = SCENARIO["pad"]
    image.select_rectangle(Gimp.ChannelOps.REPLACE, x0 + pad_x, y0 + pad_y, x1 - x0, y1 - y0)


def read_selection(image, w: int, h: int):
    pad_x, pad_y = SCENARIO["pad"]
    sel = image.get_selection().get_buffer().get(
        Gegl.Rectangle.new(pad_x, pad_y, w, h), 1.0, "Y u8", Gegl.AbyssPolicy.CLAMP)
    return np.frombuffer(bytes(sel), np.uint8).reshape(h, w)


def box_run_at(image, layer, precision, tag: str) -> None:
    """Start over, convert the image to ``precision`` and run the box again: the matte must not change."""
    reset_ok, _, _ = run_proc("plug-in-dfimat-reset", image, [layer])
    image.convert_precision(precision)
    select_box(image)
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    m = read_mask(layer)
    if m is not None:
        save(f"{tag}.raw", m)
    log(f"{tag}_run", ok=ok and reset_ok, message=msg, seconds=secs, precision=str(image.get_precision()))


def main() -> None:
    pad_x, pad_y = SCENARIO["pad"]
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(SCENARIO["photo"]))
    # Images loaded through the PDB come with undo disabled; one opened by a user has it on.
    if not image.undo_is_enabled():
        image.undo_enable()
    layer = image.get_layers()[0]
    w, h = layer.get_width(), layer.get_height()
    # A canvas larger than the layer: the selection is on the canvas, the mask in layer coordinates.
    image.resize(w + 2 * pad_x, h + 2 * pad_y, pad_x, pad_y)
    layer.set_name("Background")
    image.clean_all()
    display = Gimp.Display.new(image)
    Gimp.displays_flush()
    gt = np.frombuffer(Path(SCENARIO["gt"]).read_bytes(), np.uint8).reshape(h, w)
    x0, y0, x1, y1 = SCENARIO["box"]
    names = Gimp.get_pdb().query_procedures("plug-in-dfimat.*", ".*", ".*", ".*", ".*", ".*", ".*", ".*")
    log("registered", procedures=sorted(names), offsets=list(layer.get_offsets()[1:]), menus=menus(names))

    # 1. No prompt at all: a clear error, nothing changes.
    Gimp.Selection.none(image)
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    log("empty_prompt", ok=ok, message=msg, has_mask=layer.get_mask() is not None,
        layers=len(image.get_layers()), dirty=image.is_dirty())

    # 1b. A backend that refuses the token: a clear error, nothing changes (the selection stays the box).
    select_box(image)
    image.clean_all()
    ok, msg, secs = run_with_wrong_token(image, layer)
    log("wrong_token", ok=ok, message=msg, seconds=secs, has_mask=layer.get_mask() is not None,
        layers=len(image.get_layers()), dirty=image.is_dirty(), bounds=list(Gimp.Selection.bounds(image)[2:]),
        parasite=layer.get_parasite("dfimat-round-state") is not None)

    # 2. Box from a rectangle selection on the (padded) canvas.
    image.select_rectangle(Gimp.ChannelOps.REPLACE, x0 + pad_x, y0 + pad_y, x1 - x0, y1 - y0)
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    alpha1 = read_mask(layer)
    if alpha1 is not None:
        save("mask1.raw", alpha1)
    log("box_run", ok=ok, message=msg, seconds=secs, has_mask=alpha1 is not None,
        mask_shape=list(alpha1.shape) if alpha1 is not None else None)
    if not ok:
        return

    # 3. One undo removes the mask again.
    Gimp.displays_flush()
    time.sleep(1.0)
    keys = press_undo()
    undone = wait_for(lambda: layer.get_mask() is None)
    log("undo_box_run", mask_removed=undone, layers=len(image.get_layers()), **keys)

    # 4. Same prompt again ("nothing new" → a fresh round): the mask comes back.
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    alpha1b = read_mask(layer)
    if alpha1b is not None:
        save("mask1b.raw", alpha1b)
    log("rerun", ok=ok, message=msg, seconds=secs, has_mask=alpha1b is not None)
    if not ok:
        return

    # 5. Refinement: paint a "DFIMat -" stroke and run again on the same session.
    row, sx0, sx1 = stroke_line(alpha1b, gt, (x0, y0, x1, y1))
    width = max(5, (x1 - x0) // 25)
    stroke_layer = paint_negative_stroke(image, layer, row, sx0, sx1, width)
    sw, sh = stroke_layer.get_width(), stroke_layer.get_height()
    painted = np.frombuffer(bytes(stroke_layer.get_buffer().get(
        Gegl.Rectangle.new(0, 0, sw, sh), 1.0, "A u8", Gegl.AbyssPolicy.CLAMP)), np.uint8)
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    alpha2 = read_mask(layer)
    if alpha2 is not None:
        save("mask2.raw", alpha2)
    log("refine_run", ok=ok, message=msg, seconds=secs, stroke={"row": row, "x0": sx0, "x1": sx1, "width": width},
        painted_px=int((painted >= 128).sum()))

    # 6. One undo takes back exactly the refinement.
    Gimp.displays_flush()
    keys = press_undo()
    wait_for(lambda: (m := read_mask(layer)) is not None and not np.array_equal(m, alpha2), 10.0)
    after = read_mask(layer)
    if after is not None:
        save("mask_undo2.raw", after)
    log("undo_refine", has_mask=after is not None, **keys,
        equals_before=bool(after is not None and np.array_equal(after, alpha1b)))

    # 6b. Re-run after that Ctrl+Z. The round state (a non-undoable parasite) still describes the undone
    # refinement, and the backend session still holds its stroke and prediction. A user who took the refinement
    # back wipes its stroke too (deleting the layer here), paints a new "DFIMat -" stroke elsewhere and brings the
    # box back. The run must start from what the image shows (box + new stroke), as a fresh session does after
    # Start Over; continuing the session would let the undone stroke keep cutting the matte.
    image.remove_layer(stroke_layer)
    new_row = int(y0 + (0.35 if row > (y0 + y1) / 2 else 0.8) * (y1 - y0))
    nx0, nx1 = middle_of_longest_run(alpha1b[new_row] >= 128)
    new_stroke = paint_negative_stroke(image, layer, new_row, nx0, nx1, width)
    select_box(image)
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    undone_rerun = read_mask(layer)
    reset_ok, _, _ = run_proc("plug-in-dfimat-reset", image, [layer])
    fresh_ok, fresh_msg, _ = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    fresh = read_mask(layer)
    for name, m in (("undone_rerun.raw", undone_rerun), ("fresh_rerun.raw", fresh)):
        if m is not None:
            save(name, m)
    image.remove_layer(new_stroke)
    log("rerun_after_undo", ok=ok and reset_ok and fresh_ok, message=msg or fresh_msg, seconds=secs,
        stroke={"row": new_row, "x0": nx0, "x1": nx1, "width": width})

    # 7. Selection output: the matte becomes the selection (canvas coordinates), nothing else changes. Without
    # the stroke layer and with the same box there is nothing new, so the session restarts from the box alone
    # and must give the box run's matte again.
    image.select_rectangle(Gimp.ChannelOps.REPLACE, x0 + pad_x, y0 + pad_y, x1 - x0, y1 - y0)
    ok, msg, secs = run_proc("plug-in-dfimat-select-person", image, [layer], output="selection", text="")
    save("selection.raw", read_selection(image, w, h))
    log("selection_run", ok=ok, message=msg, seconds=secs)
    Gimp.displays_flush()
    keys = press_undo()
    box_back = wait_for(lambda: list(Gimp.Selection.bounds(image)[2:]) == [
        x0 + pad_x, y0 + pad_y, x1 + pad_x, y1 + pad_y])
    inside = np.frombuffer(bytes(image.get_selection().get_buffer().get(
        Gegl.Rectangle.new(x0 + pad_x, y0 + pad_y, x1 - x0, y1 - y0), 1.0, "Y u8", Gegl.AbyssPolicy.CLAMP)), np.uint8)
    log("undo_selection", box_back=box_back and bool((inside == 255).all()),
        bounds=list(Gimp.Selection.bounds(image)[1:]), **keys)

    # 7b. The same from the dialog a user sees (interactive run mode): OK is pressed with Alt+O.
    image.select_rectangle(Gimp.ChannelOps.REPLACE, x0 + pad_x, y0 + pad_y, x1 - x0, y1 - y0)
    notes: list = []
    threading.Thread(target=answer_dialog, args=("DFIMat Select Person", notes), daemon=True).start()
    proc = Gimp.get_pdb().lookup_procedure("plug-in-dfimat-select-person")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [layer])
    start = time.monotonic()
    status = proc.run(cfg).index(0)
    dialog_sel = read_selection(image, w, h)
    save("dialog_selection.raw", dialog_sel)
    log("dialog_run", ok=status == Gimp.PDBStatusType.SUCCESS, status=str(status), notes=notes,
        seconds=round(time.monotonic() - start, 2))

    # 7c. Run again while the selection is still the matte just written: its bounds are not the user's box,
    # so nothing is new, the session restarts from the stored box and the matte comes out the same.
    bounds_before = list(Gimp.Selection.bounds(image)[2:])
    ok, msg, secs = run_proc("plug-in-dfimat-select-person", image, [layer], output="selection", text="")
    save("reselect.raw", read_selection(image, w, h))
    log("reselect_run", ok=ok, message=msg, seconds=secs, bounds_before=bounds_before,
        box=[x0 + pad_x, y0 + pad_y, x1 + pad_x, y1 + pad_y])

    # 8. Batch: the same box for two selected layers, each gets its own mask.
    image.select_rectangle(Gimp.ChannelOps.REPLACE, x0 + pad_x, y0 + pad_y, x1 - x0, y1 - y0)
    twin_a = layer.copy()
    twin_a.set_name("copy A")
    image.insert_layer(twin_a, None, 0)
    if twin_a.get_mask() is not None:
        twin_a.remove_mask(Gimp.MaskApplyMode.DISCARD)
    twin_b = twin_a.copy()
    twin_b.set_name("copy B")
    image.insert_layer(twin_b, None, 0)
    twin_b.add_alpha()  # one RGB and one RGBA layer
    image.set_selected_layers([twin_a, twin_b])
    ok, msg, secs = run_proc("plug-in-dfimat-batch-masks", image, [twin_a, twin_b], text="", scope="selected")
    for tag, twin in (("a", twin_a), ("b", twin_b)):
        m = read_mask(twin)
        if m is not None:
            save(f"batch_{tag}.raw", m)
    log("batch_run", ok=ok, message=msg, seconds=secs,
        masks=[read_mask(t) is not None for t in (twin_a, twin_b)])
    image.remove_layer(twin_a)
    image.remove_layer(twin_b)

    # 9. Split people into layers: one masked copy per person found.
    before = len(image.get_layers())
    ok, msg, secs = run_proc("plug-in-dfimat-split-people", image, [layer])
    added = [lay for lay in image.get_layers() if "person" in lay.get_name() and lay.get_name() != layer.get_name()]
    log("split_run", ok=ok, message=msg, seconds=secs, added=len(image.get_layers()) - before,
        masked=sum(lay.get_mask() is not None for lay in added))
    for lay in added:
        image.remove_layer(lay)

    # 10. Start over (the paths below start a fresh session).
    ok, msg, secs = run_proc("plug-in-dfimat-reset", image, [layer])
    log("reset_run", ok=ok, message=msg, state_left=layer.get_parasite("dfimat-round-state") is not None)

    # 10b. Text alone (no selection, no paths, the dialog's text): the backend finds the people and takes the one the
    # words describe. Start over afterwards so the paths below start a fresh session again.
    Gimp.Selection.none(image)
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask", text=SCENARIO["text"])
    m = read_mask(layer)
    if m is not None:
        save("text.raw", m)
    reset_ok, _, _ = run_proc("plug-in-dfimat-reset", image, [layer])
    log("text_run", ok=ok and reset_ok, message=msg, seconds=secs, text=SCENARIO["text"])

    # 11. Paths, no selection: a one-anchor path on the person (click) and, as a user who wants only this person
    # would do, a "bg" line across the other person next to them (negative scribble).
    Gimp.Selection.none(image)
    ys, xs = np.nonzero(gt)
    row = int(np.median(ys))
    cols = np.nonzero(gt[row])[0]
    cx = int(cols[len(cols) // 2])
    click = Gimp.Path.new(image, "Path")
    image.insert_path(click, None, 0)
    click.bezier_stroke_new_moveto(float(cx + pad_x), float(row + pad_y))
    bg_row, bg_x0, bg_x1 = SCENARIO["other_line"]
    negative = Gimp.Path.new(image, "bg")
    image.insert_path(negative, None, 0)
    sid = negative.bezier_stroke_new_moveto(float(bg_x0 + pad_x), float(bg_row + pad_y))
    negative.bezier_stroke_lineto(sid, float(bg_x1 + pad_x), float(bg_row + pad_y))
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    m = read_mask(layer)
    if m is not None:
        save("paths.raw", m)
    log("paths_run", ok=ok, message=msg, seconds=secs, click=[cx, row], bg_line=[bg_row, bg_x0, bg_x1])
    image.remove_path(click)
    image.remove_path(negative)

    # 11b/c. The same box on a 16-bit integer and on a 32-bit float linear image: GEGL converts, the matte is the
    # box run's. Each converted image may give the very same 8-bit pixels, i.e. the same backend session, so
    # each run starts over and is a first round, comparable with the box run's matte.
    box_run_at(image, layer, Gimp.Precision.U16_NON_LINEAR, "u16")
    box_run_at(image, layer, Gimp.Precision.FLOAT_LINEAR, "float")

    # 12. A grayscale image: pixels are read as RGB, the mask written as Y.
    image.convert_grayscale()
    ok, msg, secs = run_proc("plug-in-dfimat-layer-mask", image, [layer], output="mask")
    m = read_mask(layer)
    if m is not None:
        save("gray.raw", m)
    log("gray_run", ok=ok, message=msg, seconds=secs, base=str(image.get_base_type()))
    display.delete()


T0 = time.monotonic()
try:
    main()
except Exception:
    RESULT["error"] = traceback.format_exc()
    (OUT / "result.json").write_text(json.dumps(RESULT, indent=1))
finally:
    log("end")
