#!/usr/bin/env python3
"""DFIMat for GIMP 3: pick one person with a box, path points, brush strokes or a sentence.

The only module that talks to GIMP (GObject introspection). It reads the user's intent from GIMP's own tools,
asks the local DFIMat backend for an alpha matte and writes it back as a layer mask or a selection in one undo
group. Every GIMP call of a plug-in runs in a fresh process, so the backend keeps the session (keyed by image
and layer) and a parasite on the layer remembers which prompts that session has already seen.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if (HERE / "vendor").is_dir():
    sys.path.insert(0, str(HERE / "vendor"))

import intent as it  # noqa: E402
import link  # noqa: E402

PROC_SELECT = "plug-in-dfimat-select-person"
PROC_MASK = "plug-in-dfimat-layer-mask"
PROC_BATCH = "plug-in-dfimat-batch-masks"
PROC_SPLIT = "plug-in-dfimat-split-people"
PROC_RESET = "plug-in-dfimat-reset"
PROC_VIEW = "plug-in-dfimat-view-matte"
# Temporary procedures the plug-in registers for itself and runs to write a round's result: GIMP names an undo
# group after the label of the procedure that opens it, so the write happens inside one labelled for the round.
WRITE_PROCS = {it.SELECT_TITLE: "plug-in-dfimat-write-select", it.REFINE_TITLE: "plug-in-dfimat-write-refine"}
STATE_PARASITE = "dfimat-round-state"
# On the image: the id of the layer the last round masked, so a run started from a stroke layer continues it.
TARGET_PARASITE = "dfimat-last-target"
# On a matte view image: which image and layer it shows, and how.
VIEW_PARASITE = "dfimat-view"
OUTPUTS = {"mask": "Layer mask", "selection": "Selection"}
SCOPES = {"selected": "Selected layers", "all": "All layers"}
RGB = "R'G'B' u8"


# --- reading the image -------------------------------------------------------------------------------------


def _rect_of(layer) -> it.Rect:
    _, x, y = layer.get_offsets()
    return it.Rect(x, y, layer.get_width(), layer.get_height())


def _read(drawable, fmt: str, x: int = 0, y: int = 0, w: int | None = None, h: int | None = None) -> bytes:
    """Pixels of the (x, y, w, h) window of a drawable (default: all of it) in a babl format."""
    w = drawable.get_width() if w is None else w
    h = drawable.get_height() if h is None else h
    buf = drawable.get_buffer()
    # GEGL converts any precision (16-bit, float, linear) to the requested 8-bit format.
    return bytes(buf.get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.CLAMP))


def _all_layers(image) -> list:
    out = []

    def walk(layers):
        for layer in layers:
            out.append(layer)
            if layer.is_group():
                walk(layer.get_children())

    walk(image.get_layers())
    return out


def _layer_infos(image) -> list[it.LayerInfo]:
    return [
        it.LayerInfo(layer.get_id(), layer.get_name(), layer.get_visible(), layer.is_group(),
                     layer.get_parasite(STATE_PARASITE) is not None)
        for layer in _all_layers(image)
    ]


def _last_target(image) -> int | None:
    parasite = image.get_parasite(TARGET_PARASITE)
    try:
        return int(bytes(parasite.get_data()).decode()) if parasite is not None else None
    except ValueError:
        return None


def _remember_target(image, layer) -> None:
    # Flags 0, as for the round state: no undo step, never saved, the image is not marked dirty.
    image.attach_parasite(Gimp.Parasite.new(TARGET_PARASITE, 0, list(str(layer.get_id()).encode())))


def _target_layer(image, drawables):
    """The one layer to matte: a selected mask stands for its layer; a selected stroke layer or channel stands
    for the photo layer whose session it refines (``it.pick_target``)."""
    selected = []
    for d in drawables or []:
        if isinstance(d, Gimp.LayerMask):
            d = Gimp.Layer.from_mask(d)
        selected.append(d.get_id() if isinstance(d, Gimp.Layer) else None)
    try:
        item_id = it.pick_target(_layer_infos(image), selected, _last_target(image))
    except it.IntentError as exc:
        raise link.UserError(str(exc)) from exc
    return Gimp.Layer.get_by_id(item_id)


def _selection_bounds(image):
    if Gimp.Selection.is_empty(image):
        return None
    ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    return (x1, y1, x2, y2) if ok and non_empty else None


def _read_selection(image, bounds) -> bytes:
    x1, y1, x2, y2 = bounds
    return _read(image.get_selection(), "Y u8", x1, y1, x2 - x1, y2 - y1)


def _selection_print(image) -> list | None:
    bounds = _selection_bounds(image)
    return it.selection_print(bounds, _read_selection(image, bounds)) if bounds else None


def _paths(image) -> list[it.PathInfo]:
    out = []
    for path in image.get_paths():
        strokes = []
        for sid in path.get_strokes():
            _kind, controls, _closed = path.stroke_get_points(sid)
            # Bézier strokes are control-anchor-control triples; the anchors are every third pair.
            anchors = tuple((controls[i], controls[i + 1]) for i in range(2, len(controls) - 1, 6))
            polyline: tuple = ()
            if len(anchors) > 1:
                coords, _closed2 = path.stroke_interpolate(sid, 1.0)
                polyline = tuple((coords[i], coords[i + 1]) for i in range(0, len(coords) - 1, 2))
            if anchors:
                strokes.append(it.PathStroke(anchors, polyline))
        out.append(it.PathInfo(path.get_name(), tuple(strokes)))
    return out


def _stroke_layers(image, target: it.Rect) -> list[it.StrokeLayer]:
    """Every "DFIMat ±" layer's alpha, read only where it overlaps the target layer (big images stay cheap)."""
    out = []
    for layer in _all_layers(image):
        if it.stroke_layer_polarity(layer.get_name()) is None or layer.is_group():
            continue
        if not layer.has_alpha():
            raise link.UserError(
                f"The stroke layer \"{layer.get_name()}\" has no transparency: add an alpha channel "
                "(Layer → Transparency → Add Alpha Channel), erase it, and paint the strokes on it."
            )
        rect = _rect_of(layer)
        left, top = max(rect.x, target.x), max(rect.y, target.y)
        right = min(rect.x + rect.width, target.x + target.width)
        bottom = min(rect.y + rect.height, target.y + target.height)
        if right <= left or bottom <= top:
            continue
        alpha = _read(layer, "A u8", left - rect.x, top - rect.y, right - left, bottom - top)
        out.append(it.StrokeLayer(layer.get_name(), layer.get_id(), it.Rect(left, top, right - left, bottom - top),
                                  alpha))
    return out


def _collect_intent(image, target, text: str, state: it.RoundState | None) -> tuple[it.Intent, tuple | None]:
    """The intent and the selection bounds it was read with."""
    rect = _rect_of(target)
    bounds = _selection_bounds(image)
    intent = it.build_intent(
        rect, bounds, _paths(image), _stroke_layers(image, rect),
        dialog_text=text, layer_name=target.get_name(),
        state=state, read_selection=lambda: _read_selection(image, bounds),
    )
    return it.require_prompt(intent), bounds


def _mask_size(layer) -> tuple[int, int] | None:
    mask = layer.get_mask()
    return None if mask is None else (mask.get_width(), mask.get_height())


def _mask_print(layer) -> list | None:
    mask = layer.get_mask()
    return None if mask is None else it.mask_print(mask.get_width(), mask.get_height(), _read(mask, "Y u8"))


def _session_key(image, layer) -> str:
    return f"gimp:{image.get_id()}:{layer.get_id()}"


def _load_state(layer) -> it.RoundState | None:
    parasite = layer.get_parasite(STATE_PARASITE)
    if parasite is None:
        return None
    return it.RoundState.from_bytes(bytes(parasite.get_data()))


def _store_state(layer, state: it.RoundState | None) -> None:
    if state is None:
        if layer.get_parasite(STATE_PARASITE) is not None:
            layer.detach_parasite(STATE_PARASITE)
        return
    # Flags 0: not persistent (a session id means nothing after GIMP restarts) and not undoable, so storing
    # the state adds no undo step and never marks the image dirty. Ctrl+Z therefore leaves it describing the
    # undone round; the result fingerprint it holds is how the next run notices (``it.last_result_changed``).
    layer.attach_parasite(Gimp.Parasite.new(STATE_PARASITE, 0, list(state.to_bytes())))


# --- writing the result ------------------------------------------------------------------------------------


def _write_shadow(drawable, x: int, y: int, w: int, h: int, data: bytes) -> None:
    """An undoable write. GIMP clips shadow merges to the current selection, so callers clear it first."""
    shadow = drawable.get_shadow_buffer()
    shadow.set(Gegl.Rectangle.new(x, y, w, h), "Y u8", data)
    shadow.flush()
    drawable.merge_shadow(True)
    drawable.update(x, y, w, h)


def _write_mask(layer, alpha: bytes) -> None:
    """Put the matte on the layer as a new mask (replacing any old one): adding and removing masks are the
    undoable steps, and a mask filled before it is attached needs no selection-clipped shadow merge."""
    mask = layer.create_mask(Gimp.AddMaskType.BLACK)
    buf = mask.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, layer.get_width(), layer.get_height()), "Y u8", alpha)
    buf.flush()
    if layer.get_mask() is not None:
        layer.remove_mask(Gimp.MaskApplyMode.DISCARD)
    layer.add_mask(mask)


def _write_selection(image, layer, alpha: bytes) -> None:
    rect = _rect_of(layer)
    left, top = max(rect.x, 0), max(rect.y, 0)
    right = min(rect.x + rect.width, image.get_width())
    bottom = min(rect.y + rect.height, image.get_height())
    Gimp.Selection.none(image)
    if right <= left or bottom <= top:
        return
    sub = it.sub_rect(alpha, rect.width, left - rect.x, top - rect.y, right - left, bottom - top)
    _write_shadow(image.get_selection(), left, top, right - left, bottom - top, sub)


# --- procedures --------------------------------------------------------------------------------------------


def _tick(info: dict | None) -> None:
    """Advance GIMP's progress bar from the backend's progress messages (a pulse while it only works)."""
    done, total = (info or {}).get("done"), (info or {}).get("total")
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        Gimp.progress_update(min(done / total, 1.0))
    else:
        Gimp.progress_pulse()


def _fail(procedure, message: str):
    return procedure.new_return_values(
        Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error.new_literal(Gimp.PlugIn.error_quark(), message, 0)
    )


def _show_dialog(procedure, config, title: str) -> bool:
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init("dfimat")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, title)
    dialog.fill(None)
    accepted = dialog.run()
    dialog.destroy()
    return bool(accepted)


def _runner(title: str, body, dialog: bool = True):
    """A GIMP run function around ``body(image, drawables, config, procedure)``.

    Bodies read everything and call the backend before they open their undo group, so a UserError (or any
    other failure) before that point leaves the image exactly as it was.
    """

    def run(procedure, run_mode, image, drawables, config, data):
        if dialog and run_mode == Gimp.RunMode.INTERACTIVE and not _show_dialog(procedure, config, title):
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        Gimp.progress_init(f"{title}…")
        try:
            body(image, drawables, config, procedure)
        except (link.UserError, it.IntentError) as exc:
            return _fail(procedure, str(exc))
        except Exception as exc:
            traceback.print_exc()
            return _fail(procedure, f"DFIMat failed unexpectedly: {type(exc).__name__}: {exc}")
        finally:
            Gimp.progress_end()
        Gimp.displays_flush()
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())

    return run


def _text_arg(config) -> str:
    return (config.get_property("text") or "").strip()


def _choice(config, name: str, allowed: dict[str, str]) -> str:
    value = (config.get_property(name) or "").strip().lower()
    if value not in allowed:
        raise link.UserError(f"'{name}' must be one of {', '.join(allowed)}, not {value!r}.")
    return value


def _predict_layer(image, layer, text: str) -> tuple[bytes, it.RoundState, list[str], str, dict, bytes]:
    """Read, ask the backend; nothing in the image is touched here. Returns the matte, the round state, notes
    about prompt parts that were ignored (outside the layer), the round's title, what it sent, and the layer's
    pixels (for an open matte view)."""
    previous = _load_state(layer)
    intent, bounds = _collect_intent(image, layer, text, previous)
    w, h = layer.get_width(), layer.get_height()
    pixels = _read(layer, RGB)
    backend = link.Link(_tick)
    session = backend.open_image(pixels, w, h, 3, key=_session_key(image, layer))
    # Only a continued session needs the check, and the mask is read only when its size still matches.
    changed = previous is not None and previous.session == session and it.last_result_changed(
        previous, intent, bounds, _mask_size(layer), lambda: _read(layer.get_mask(), "Y u8"))
    prompts, state, restart = it.plan_round(intent, previous, session, changed)
    if restart:
        # Nothing was added since the last run, or its result was undone or edited: start the session over
        # from everything the image shows now.
        backend.reset(session)
    title = it.round_title(previous, session, restart)
    alpha, aw, ah = backend.predict(session, prompts)
    if (aw, ah) != (w, h) or len(alpha) != w * h:
        raise link.UserError(f"The backend answered with a {aw}x{ah} matte for a {w}x{h} layer; re-run install.py.")
    return alpha, state, intent.notes, title, prompts, pixels


def _undo_step(procedure, image, title: str, write) -> None:
    """Run ``write()`` as one undo step named ``title``.

    GIMP names a plug-in's undo group after the label of the procedure that opens it; a temporary procedure
    labelled with the round's title, run from here, opens the group. Should GIMP refuse the temporary procedure,
    the write still happens in one undo group, named after the menu command.
    """
    name = WRITE_PROCS[title]
    errors: list[BaseException] = []

    def run(proc, run_mode, img, drawables, config, data):
        try:
            img.undo_group_start()
            try:
                write()
            finally:
                img.undo_group_end()
        except Exception as exc:  # re-raised in the caller, where the user message is made
            errors.append(exc)
            return proc.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error())
        return proc.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())

    plug_in = procedure.get_plug_in()
    temp = Gimp.ImageProcedure.new(plug_in, name, Gimp.PDBProcType.TEMPORARY, run, None)
    temp.set_menu_label(title)
    temp.set_image_types("*")
    temp.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.ALWAYS)
    plug_in.add_temp_procedure(temp)
    try:
        proc = Gimp.get_pdb().lookup_procedure(name)
        config = proc.create_config()
        config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        config.set_property("image", image)
        result = proc.run(config)
        ran = result.index(0) == Gimp.PDBStatusType.SUCCESS or errors
    except Exception:  # the temporary procedure could not run at all: nothing was written yet
        traceback.print_exc()
        ran = False
    finally:
        plug_in.remove_temp_procedure(name)
    if errors:
        raise errors[0]
    if not ran:
        image.undo_group_start()
        try:
            write()
        finally:
            image.undo_group_end()


def _change(output: str, had_mask: bool) -> str:
    if output == "selection":
        return "selection replaced"
    return "mask updated" if had_mask else "mask added"


def select_person(image, drawables, config, procedure=None) -> None:
    started = time.monotonic()
    if _view_info(image) is not None:
        raise link.UserError("This is DFIMat's matte view, not a photo: switch to the photo's tab and run again.")
    output = _choice(config, "output", OUTPUTS)
    layer = _target_layer(image, drawables)
    alpha, state, notes, title, _prompts, pixels = _predict_layer(image, layer, _text_arg(config))
    had_mask = layer.get_mask() is not None

    def write() -> None:
        if output == "mask":
            _write_mask(layer, alpha)
        else:
            _write_selection(image, layer, alpha)

    if procedure is None:
        image.undo_group_start()
        try:
            write()
        finally:
            image.undo_group_end()
    else:
        _undo_step(procedure, image, title, write)
    # Read back what GIMP holds (the selection clipped to the canvas, the mask in the image's precision), so the
    # next run recognises exactly this result, and notices when it is gone.
    if output == "selection":
        state.selection, state.mask = _selection_print(image), None
    else:
        state.mask = _mask_print(layer)
    _store_state(layer, state)
    _remember_target(image, layer)
    _refresh_views(image, layer, pixels)
    report = it.round_report(title, _change(output, had_mask), time.monotonic() - started)
    Gimp.message(report + ("; " + "; ".join(notes) if notes else ""))


def _batch_targets(image, drawables, scope: str) -> list:
    pool = _all_layers(image) if scope == "all" else [
        Gimp.Layer.from_mask(d) if isinstance(d, Gimp.LayerMask) else d for d in drawables or []
    ]
    layers = [
        layer for layer in pool
        if isinstance(layer, Gimp.Layer) and not layer.is_group()
        and it.stroke_layer_polarity(layer.get_name()) is None
    ]
    if not layers:
        raise link.UserError("No layer to mask: select the layers (or choose \"All layers\") and run again.")
    return layers


def _batch_item(layer, bounds, paths: list[it.PathInfo], text: str) -> tuple[dict, list[str]]:
    rect = _rect_of(layer)
    try:
        prompts, notes = it.batch_prompts(rect, bounds, paths, text)
    except it.IntentError as exc:
        raise link.UserError(f"Layer \"{layer.get_name()}\": {exc}") from exc
    item = {"pixels": _read(layer, RGB), "width": rect.width, "height": rect.height, "channels": 3,
            "prompts": prompts}
    return item, [f"{layer.get_name()}: {note}" for note in notes]


def batch_masks(image, drawables, config, procedure=None) -> None:
    scope = _choice(config, "scope", SCOPES)
    text = _text_arg(config)
    layers = _batch_targets(image, drawables, scope)
    bounds, paths = _selection_bounds(image), _paths(image)
    items, notes = [], []
    for layer in layers:
        item, item_notes = _batch_item(layer, bounds, paths, text)
        items.append(item)
        notes += item_notes
    started = time.monotonic()
    stroke_note = it.batch_stroke_note(layer.get_name() for layer in _all_layers(image))
    if stroke_note:
        notes.append(stroke_note)
    results = link.Link(_tick).batch(items)
    alphas = []
    for layer, entry in zip(layers, results, strict=True):
        if entry["error"] is not None or not entry["masks"]:
            why = entry["error"] or "no matte"
            raise link.UserError(f"DFIMat could not mask the layer \"{layer.get_name()}\": {why}")
        alphas.append(entry["masks"][0]["alpha"])
    image.undo_group_start()
    try:
        for layer, alpha in zip(layers, alphas, strict=True):
            _write_mask(layer, alpha)
    finally:
        image.undo_group_end()
    report = f"DFIMat Batch Layer Masks: {len(layers)} mask(s) written in {time.monotonic() - started:.1f} s"
    Gimp.message(report + ("; " + "; ".join(notes) if notes else ""))


def split_people(image, drawables, config, procedure=None) -> None:
    started = time.monotonic()
    layer = _target_layer(image, drawables)
    w, h = layer.get_width(), layer.get_height()
    item = {"pixels": _read(layer, RGB), "width": w, "height": h, "channels": 3, "prompts": {},
            "every_person": True}
    (entry,) = link.Link(_tick).batch([item])
    if entry["error"] is not None:
        raise link.UserError(f"DFIMat could not find the people: {entry['error']}")
    people = [m["alpha"] for m in entry["masks"]]
    if not people:
        raise link.UserError("DFIMat found no person in this layer.")
    parent = layer.get_parent()
    position = image.get_item_position(layer)
    image.undo_group_start()
    try:
        for index, alpha in enumerate(people, start=1):
            copy = layer.copy()
            copy.set_name(f"{layer.get_name()} – person {index}")
            image.insert_layer(copy, parent, position)
            _write_mask(copy, alpha)
    finally:
        image.undo_group_end()
    Gimp.message(f"DFIMat Split People: {len(people)} people found, a masked layer each, "
                 f"in {time.monotonic() - started:.1f} s")


def start_over(image, drawables, config, procedure=None) -> None:
    layer = _target_layer(image, drawables)
    state = _load_state(layer)
    if state is not None:
        link.Link(_tick).reset(state.session)
    _store_state(layer, None)


# --- the matte view --------------------------------------------------------------------------------------------
# A separate image in its own tab: the photo layer's pixels and its current matte against a colour. It never
# touches the user's image (no layer, no undo step, nothing saved with it), has no undo history of its own, and is
# marked clean so closing it asks nothing. Runs refresh an open view of their layer.


def _view_info(image) -> dict | None:
    parasite = image.get_parasite(VIEW_PARASITE)
    if parasite is None:
        return None
    try:
        return json.loads(bytes(parasite.get_data()).decode())
    except ValueError:
        return None


def _views_of(image, layer) -> list:
    out = []
    for other in Gimp.get_images():
        info = _view_info(other)
        if info and info.get("image") == image.get_id() and info.get("layer") == layer.get_id():
            out.append(other)
    return out


def _close_view(view) -> None:
    info = _view_info(view) or {}
    display = Gimp.Display.get_by_id(info["display"]) if isinstance(info.get("display"), int) else None
    if display is not None and display.is_valid():
        display.delete()  # the last display of an image takes the image with it
    if view.is_valid():
        view.delete()


def _current_matte(image, layer) -> bytes:
    """The layer's matte as "Y u8" bytes over the layer: its mask, else the selection a selection output left."""
    if layer.get_mask() is not None:
        return _read(layer.get_mask(), "Y u8")
    bounds = _selection_bounds(image)
    if bounds is None:
        raise link.UserError(
            f"The layer \"{layer.get_name()}\" has no matte to view yet: run DFIMat Select Person first.")
    _, x, y = layer.get_offsets()
    return _read(image.get_selection(), "Y u8", x, y, layer.get_width(), layer.get_height())


def _fill_layer(view, name: str, rgb: bytes, w: int, h: int, opacity: float = 100.0):
    layer = Gimp.Layer.new(view, name, w, h, Gimp.ImageType.RGB_IMAGE, opacity, Gimp.LayerMode.NORMAL)
    view.insert_layer(layer, None, 0)
    layer.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), RGB, rgb)
    return layer


def _draw_view(view, info: dict, pixels: bytes, matte: bytes, w: int, h: int) -> None:
    for old in view.get_layers():
        view.remove_layer(old)
    masked, mask_bytes = it.view_plan(info["mode"], matte)
    colour = bytes(info["color"]) * (w * h)
    if info["mode"] == "solid":
        _fill_layer(view, "colour", colour, w, h)
        top = _fill_layer(view, "photo", pixels, w, h)
    else:
        _fill_layer(view, "photo", pixels, w, h)
        top = _fill_layer(view, "colour", colour, w, h, it.OVERLAY_OPACITY)
    mask = top.create_mask(Gimp.AddMaskType.WHITE)
    mask.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), "Y u8", mask_bytes)
    top.add_mask(mask)
    view.clean_all()


def _refresh_views(image, layer, pixels: bytes) -> None:
    views = _views_of(image, layer)
    if not views:
        return
    matte = _current_matte(image, layer)
    for view in views:
        _draw_view(view, _view_info(view), pixels, matte, layer.get_width(), layer.get_height())


def _color_bytes(color) -> list[int]:
    r, g, b, _a = color.get_rgba()
    return [it.srgb_byte(r), it.srgb_byte(g), it.srgb_byte(b)]


def view_matte(image, drawables, config, procedure=None) -> None:
    """Open the matte view of the target layer, or close it when it is open (or when run on a view)."""
    if _view_info(image) is not None:
        _close_view(image)
        return
    layer = _target_layer(image, drawables)
    views = _views_of(image, layer)
    if views:
        for view in views:
            _close_view(view)
        return
    w, h = layer.get_width(), layer.get_height()
    matte = _current_matte(image, layer)
    info = {"image": image.get_id(), "layer": layer.get_id(), "mode": _choice(config, "mode", it.VIEW_MODES),
            "color": _color_bytes(config.get_property("color"))}
    view = Gimp.Image.new(w, h, Gimp.ImageBaseType.RGB)
    view.undo_disable()
    _draw_view(view, info, _read(layer, RGB), matte, w, h)
    info["display"] = Gimp.Display.new(view).get_id()
    view.attach_parasite(Gimp.Parasite.new(VIEW_PARASITE, 0, list(json.dumps(info).encode())))


RUNNERS = {
    PROC_SELECT: _runner("DFIMat Select Person", select_person),
    PROC_MASK: _runner("DFIMat Select Person", select_person),
    PROC_BATCH: _runner("DFIMat Batch Layer Masks", batch_masks),
    PROC_SPLIT: _runner("DFIMat Split People into Layers", split_people, dialog=False),
    PROC_RESET: _runner("DFIMat Start Over", start_over, dialog=False),
    PROC_VIEW: _runner("DFIMat View Matte", view_matte),
}


# --- registration ------------------------------------------------------------------------------------------

_RW = GObject.ParamFlags.READWRITE
_TEXT_HELP = "Who to pick, e.g. \"the woman in the red coat\" (optional)"


def _default_view_color():
    # Black: light leaks (sky, a pale wall) stand out on it, which a white checkerboard hides. GEGL must be
    # initialised before a colour exists, and GIMP asks for the arguments before any run has done that.
    Gegl.init(None)
    return Gegl.Color.new("black")


def _choice_of(options: dict[str, str]):
    choice = Gimp.Choice.new()
    for index, (nick, label) in enumerate(options.items()):
        choice.add(nick, index, label, "")
    return choice


class DFIMat(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return [PROC_SELECT, PROC_MASK, PROC_BATCH, PROC_SPLIT, PROC_RESET, PROC_VIEW]

    def do_create_procedure(self, name):
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, RUNNERS[name], None)
        proc.set_image_types("RGB*, GRAY*")
        proc.set_attribution("DFIMat contributors", "DFIMat contributors", "2026")
        if name in (PROC_SELECT, PROC_MASK):
            is_mask = name == PROC_MASK
            proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
            # One command under two menus, as users look for it: Select for a selection, Layer → Mask for a mask.
            proc.set_menu_label("DFIMat Select Person…")
            proc.add_menu_path("<Image>/Layer/Mask" if is_mask else "<Image>/Select")
            proc.set_documentation(
                "Select one person with DFIMat",
                "Reads the selection (box), paths (points = clicks, strokes = scribbles; names starting with "
                "'-' or 'bg' are negative), strokes painted on layers named 'DFIMat +' / 'DFIMat -' and the "
                "text, and writes the person's alpha matte as a layer mask or a selection in one undo step. "
                "Run again after adding strokes to refine.",
                name,
            )
            proc.add_string_argument("text", "Description", _TEXT_HELP, "", _RW)
            proc.add_choice_argument(
                "output", "Output", "Where the matte goes", _choice_of(OUTPUTS),
                "mask" if is_mask else "selection", _RW,
            )
        elif name == PROC_BATCH:
            proc.set_sensitivity_mask(
                Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
            )
            proc.set_menu_label("DFIMat Batch Layer Masks…")
            proc.add_menu_path("<Image>/Layer/Mask")
            proc.set_documentation(
                "A DFIMat person mask on many layers",
                "One prompt (the selection's box, paths and/or the text) for every selected layer, or every "
                "layer with scope 'all'; each layer gets its own layer mask, all in one undo step. Strokes on "
                "'DFIMat +/-' layers are not used (a message says so).",
                name,
            )
            proc.add_string_argument("text", "Description", _TEXT_HELP, "person", _RW)
            proc.add_choice_argument("scope", "Layers", "Which layers get a mask", _choice_of(SCOPES), "selected", _RW)
        elif name == PROC_SPLIT:
            proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
            proc.set_menu_label("DFIMat Split People into Layers")
            proc.add_menu_path("<Image>/Layer")
            proc.set_documentation(
                "One layer per person",
                "Finds every person in the active layer and adds a copy of the layer with that person's mask "
                "for each, in one undo step.",
                name,
            )
        elif name == PROC_VIEW:
            proc.set_sensitivity_mask(
                Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
            )
            proc.set_menu_label("DFIMat View Matte…")
            proc.add_menu_path("<Image>/View")
            proc.set_documentation(
                "Look at the DFIMat matte against a colour",
                "Opens a separate view of the layer and its current matte (its layer mask, or the selection) on a "
                "solid colour or under a coloured overlay; run it again, or on the view, to close it. The image "
                "itself, its undo history and its file are not touched; later DFIMat runs refresh the view.",
                name,
            )
            proc.add_choice_argument("mode", "Show", "How to show the matte", _choice_of(it.VIEW_MODES), "solid",
                                     _RW)
            proc.add_color_argument("color", "Colour", "The colour behind the matte, or of the overlay", False,
                                    _default_view_color(), _RW)
        else:
            proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
            proc.set_menu_label("DFIMat Start Over")
            proc.add_menu_path("<Image>/Select")
            proc.set_documentation(
                "Forget this layer's DFIMat rounds",
                "The next DFIMat run on the active layer starts a fresh session instead of refining.",
                name,
            )
        return proc


if __name__ == "__main__":
    Gimp.main(DFIMat.__gtype__, sys.argv)
