"""Runs inside Krita's GUI (Xvfb) via the ``kth`` harness plug-in: the refinement loop as a user drives it.

A rectangle selection; Ctrl+Alt+Shift+P pressed in Krita's window (xdotool); a line painted on a "DFIMat -" layer
that stays the active layer; Ctrl+Alt+Shift+R; Ctrl+Z three times (refine, the stroke layer, the first result) and
Ctrl+Shift+Z three times; the matte view toggled with Ctrl+Alt+Shift+M; the DFIMat actions looked up in
Settings > Configure Krita > Keyboard Shortcuts. Parameters: JSON file ``$KTH_PARAMS``; masks and pictures go to
its ``out_dir``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

from kdoc import open_photo, run_and_report, structure

WAIT_S = 60.0


def main():
    return run_and_report(run)


def pump(seconds: float) -> None:
    from PyQt5.QtCore import QCoreApplication, QEventLoop

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents(QEventLoop.AllEvents, 20)
        time.sleep(0.005)


def wait_until(predicate, seconds: float = WAIT_S) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pump(0.05)
        if predicate():
            return True
    return predicate()


def press(window, keys: str) -> None:
    """Keys pressed in Krita's main window the way a user's keyboard sends them (no window manager: focus it)."""
    window.qwindow().activateWindow()
    pump(0.2)
    subprocess.run(["xdotool", "windowfocus", str(int(window.qwindow().winId()))], timeout=10)
    pump(0.2)
    subprocess.run(["xdotool", "key", "--clearmodifiers", keys], timeout=10)


def history(window) -> list[str]:
    """The Undo History docker's rows: the names Edit > Undo walks back through."""
    from PyQt5.QtWidgets import QAbstractItemView, QDockWidget

    for dock in window.qwindow().findChildren(QDockWidget):
        if dock.objectName() == "History":
            for view in dock.findChildren(QAbstractItemView):
                model = view.model()
                if model is not None and model.metaObject().className() == "KisUndoModel":
                    return [model.data(model.index(r, 0)) for r in range(model.rowCount())]
    return []


def mask_bytes(node, width, height):
    from dfimat import document

    masks = document.dfimat_masks(node)
    return bytes(masks[-1].pixelData(0, 0, width, height)) if masks else None


def selection_box(doc):
    sel = doc.selection()
    return [sel.x(), sel.y(), sel.width(), sel.height()] if sel is not None and sel.width() > 0 else None


def digest(doc, node):
    doc.waitForDone()
    w, h = doc.width(), doc.height()
    return structure(doc), hashlib.sha256(bytes(node.projectionPixelData(0, 0, w, h))).hexdigest()


def undone(doc, node, was, seconds: float = 5.0):
    """The digest once an undo or redo has changed it and then stopped changing. Why: Krita swaps the layer tree
    first and recomputes the projection after it, so the first digest that differs can be halfway (seen once in a
    loaded CI run: the refinement's undo compared before the first mask was back)."""
    wait_until(lambda: digest(doc, node) != was, seconds)
    now = digest(doc, node)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pump(0.25)
        again = digest(doc, node)
        if again == now:
            break
        now = again
    return now


def round_by_key(window, ctl, keys: str, label: str, report: dict) -> None:
    before = ctl.last_message
    started = time.monotonic()
    press(window, keys)
    done = wait_until(lambda: ctl.last_message != before and not ctl.worker.busy)
    report[f"{label}_s"] = round(time.monotonic() - started, 2)
    report[f"{label}_message"] = ctl.last_message
    report[f"{label}_error"] = ctl.last_error
    if not done:
        raise RuntimeError(f"{label}: no result after {WAIT_S} s ({ctl.last_message!r})")


def run(params, report):
    from dfimat import document
    from dfimat.docker import DFIMatDocker
    from krita import Krita, Selection
    from PyQt5.QtWidgets import QApplication, QDockWidget, QWidget

    app = Krita.instance()
    report["krita"] = app.version()
    window, doc, node = open_photo(app, params["image"])
    width, height = doc.width(), doc.height()
    ctl = DFIMatDocker.controller
    docks = [d for d in window.qwindow().findChildren(QDockWidget) if d.windowTitle() == "DFIMat"]
    docks[0].output.setCurrentIndex(docks[0].output.findData("mask"))
    pump(1.0)
    report["history_start"] = history(window)

    x, y, w, h = params["box"]
    sel = Selection()
    sel.select(x, y, w, h, 255)
    doc.setSelection(sel)
    doc.waitForDone()
    start = digest(doc, node)

    # Round 1 from the keyboard.
    round_by_key(window, ctl, "ctrl+alt+shift+p", "select", report)
    mask1 = mask_bytes(node, width, height)
    open(os.path.join(params["out_dir"], "mask1.raw"), "wb").write(mask1 or b"")
    report["after_select"] = {"history": history(window), "selection": selection_box(doc),
                              "undo_text": app.action("edit_undo").text()}

    # The user paints on "DFIMat -" and leaves that layer active.
    plane = open(params["stroke"], "rb").read()
    bgra = bytearray(width * height * 4)
    bgra[2::4] = plane
    bgra[3::4] = plane
    stroke = doc.createNode("DFIMat -", "paintlayer")
    stroke.setPixelData(bytes(bgra), 0, 0, width, height)
    doc.rootNode().addChildNode(stroke, node)
    doc.waitForDone()
    doc.setActiveNode(stroke)
    pump(0.3)
    report["layers_selected_before_refine"] = [n.name() for n in window.activeView().selectedNodes()]
    before_refine = digest(doc, node)

    # Round 2 from the keyboard, with the stroke layer still active.
    round_by_key(window, ctl, "ctrl+alt+shift+r", "refine", report)
    mask2 = mask_bytes(node, width, height)
    open(os.path.join(params["out_dir"], "mask2.raw"), "wb").write(mask2 or b"")
    report["after_refine"] = {"history": history(window),
                              "layers_selected": [n.name() for n in window.activeView().selectedNodes()],
                              "masks": [m.type() for m in document.dfimat_masks(node)],
                              "undo_text": app.action("edit_undo").text()}
    after_refine = digest(doc, node)
    shot(window.qwindow(), params, "krita_after_refine.png")

    # Ctrl+Z: the refinement, then the stroke layer, then the first result; then all three back.
    steps = []
    for expected in (before_refine, None, start):
        was = digest(doc, node)
        press(window, "ctrl+z")
        now = undone(doc, node, was)
        steps.append({"restored": expected is None or now == expected, "selection": selection_box(doc),
                      "mask_is_mask1": mask_bytes(node, width, height) == mask1})
    report["undo_steps"] = steps
    for _ in range(3):
        was = digest(doc, node)
        press(window, "ctrl+shift+z")
        undone(doc, node, was)
    redone = digest(doc, node)
    report["redo_back"] = redone == after_refine
    report["redo_detail"] = {"structure": redone[0], "expected": after_refine[0],
                             "mask_is_mask2": mask_bytes(node, width, height) == mask2,
                             "history": history(window), "redo_text": app.action("edit_redo").text()}

    # The matte view: on, two looks, off; the document must not notice.
    modified, rows, structure_before = doc.modified(), len(history(window)), digest(doc, node)
    press(window, "ctrl+alt+shift+m")
    views = [wdg for wdg in QApplication.topLevelWidgets() if wdg.objectName() == "dfimat_matte_view"]
    shown = wait_until(lambda: bool(views) and views[0].isVisible(), 10)
    view = {"shown": shown}
    if shown:
        pump(0.5)
        view_widget: QWidget = views[0]
        view["picture"] = view_widget._image is not None
        if view_widget._image is not None:
            corner = view_widget._image.pixelColor(2, 2)
            view["corner_rgb"] = [corner.red(), corner.green(), corner.blue()]
        view_widget.grab().save(os.path.join(params["out_dir"], "view_black.png"))
        view_widget.mode.setCurrentIndex(view_widget.mode.findData("overlay"))
        pump(0.5)
        if view_widget._image is not None:
            corner = view_widget._image.pixelColor(2, 2)
            view["overlay_corner_rgb"] = [corner.red(), corner.green(), corner.blue()]
        view_widget.grab().save(os.path.join(params["out_dir"], "view_overlay.png"))
        shot(window.qwindow(), params, "krita_view.png")
        press(window, "ctrl+alt+shift+m")
        view["hidden_again"] = wait_until(lambda: not view_widget.isVisible(), 10)
    view["document_untouched"] = (doc.modified() == modified and len(history(window)) == rows
                                  and digest(doc, node) == structure_before)
    report["view"] = view
    report["shortcut_editor"] = shortcut_editor(app, params["out_dir"])


def shot(widget, params, name):
    widget.grab().save(os.path.join(params["out_dir"], name))


def shortcut_editor(app, out_dir: str) -> dict:
    """Settings > Configure Krita > Keyboard Shortcuts, searched for "dfimat": which rows stay, with what shortcut."""
    from PyQt5.QtCore import QTimer
    from PyQt5.QtWidgets import QAbstractItemView, QApplication, QLineEdit, QTreeWidget

    found: dict = {}

    def inspect():
        dialog = QApplication.activeModalWidget()
        try:
            if dialog is None:
                found["error"] = "no modal dialog"
                return
            found["dialog"] = dialog.windowTitle()
            # Pages are built when first shown: open "Keyboard Shortcuts" as a user clicks it in the page list.
            for pages in dialog.findChildren(QAbstractItemView):
                model = pages.model()
                rows = [model.index(r, 0) for r in range(model.rowCount())] if model is not None else []
                for index in rows:
                    if index.data() == "Keyboard Shortcuts":
                        pages.setCurrentIndex(index)
            pump(1.5)
            trees = [t for t in dialog.findChildren(QTreeWidget) if _tree_rows(t, "DFIMat")]
            if not trees:
                found["error"] = "no DFIMat row in any tree of the dialog"
                return
            tree = trees[0]
            for edit in tree.parentWidget().findChildren(QLineEdit):
                edit.setText("dfimat")
            pump(1.0)
            dialog.grab().save(os.path.join(out_dir, "krita_shortcuts.png"))
            found["rows"] = [(text, shortcut) for text, shortcut, hidden in _tree_rows(tree, "") if not hidden
                             and text]
            found["all_rows_visible"] = sum(1 for *_x, hidden in _tree_rows(tree, "") if not hidden)
        finally:
            if dialog is not None:
                dialog.reject()

    QTimer.singleShot(2500, inspect)
    action = app.action("options_configure")
    if action is None:
        return {"error": "no options_configure action"}
    action.trigger()
    pump(0.5)
    return found


def _tree_rows(tree, needle: str):
    rows = []

    def walk(item):
        for i in range(item.childCount()):
            child = item.child(i)
            text = child.text(0)
            if needle in text or not needle:
                rows.append((text, child.text(1), child.isHidden() or _hidden_parent(child)))
            walk(child)

    walk(tree.invisibleRootItem())
    return rows


def _hidden_parent(item) -> bool:
    parent = item.parent()
    while parent is not None:
        if parent.isHidden():
            return True
        parent = parent.parent()
    return False
