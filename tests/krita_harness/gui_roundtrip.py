"""Runs inside Krita's GUI (Xvfb) via the ``kth`` harness plug-in, with the DFIMat plug-in installed and enabled.

The user's path: open a photo in a window, select around one person, Tools > Scripts > DFIMat Select Person (the
action), paint on a "DFIMat -" layer, press the docker's Refine button; Krita's GUI thread keeps running (a 10 ms
heartbeat timer measures the longest stall); then Edit > Undo until the document is back to its starting state.
Parameters: JSON file ``$KTH_PARAMS`` (see kr_roundtrip.py); raw alphas go to ``out_dir``.
"""

from __future__ import annotations

import hashlib
import os
import time

from kdoc import open_photo, run_and_report, structure

ACTION_IDS = ("dfimat_select_person", "dfimat_refine", "dfimat_reset", "dfimat_selected_layers",
              "dfimat_split_people")
WAIT_S = 600.0
# Every backend job is held back this long on the worker thread, so a plug-in that waited on the GUI thread would
# freeze Krita for at least this long: far above any stall Krita's own painting causes on a loaded machine.
BACKEND_DELAY_S = 3.0
MAX_UNDO_STEPS = 12


def main():
    return run_and_report(run)


def delay_backend_jobs(worker):
    submit = worker.submit

    def delayed_submit(fn, *args, **kwargs):
        def slow(client, job):
            time.sleep(BACKEND_DELAY_S)
            return fn(client, job)
        return submit(slow, *args, **kwargs)

    worker.submit = delayed_submit


def wait_idle(ctl, label, report):
    """Let Krita's event loop run (the plug-in's QTimer pump delivers the result) and measure GUI stalls."""
    from PyQt5.QtCore import QCoreApplication, QEventLoop, QTimer

    last, gaps, writes = [time.monotonic()], [0.0], [0.0]

    def beat():
        # A gap that ends while the job is still running is the GUI waiting on something other than the document
        # write (which runs in the final pump tick and is measured separately).
        now = time.monotonic()
        (gaps if ctl.worker.busy else writes).append(now - last[0])
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    started = time.monotonic()
    # The job may finish inside processEvents before the first busy check; one pass always runs.
    while True:
        QCoreApplication.processEvents(QEventLoop.AllEvents, 20)
        if not ctl.worker.busy:
            break
        if time.monotonic() - started > WAIT_S:
            ctl.cancel()
            raise RuntimeError(f"{label}: no result after {WAIT_S} s")
        time.sleep(0.002)
    heartbeat.stop()
    report[f"{label}_s"] = round(time.monotonic() - started, 3)
    report[f"{label}_max_gui_stall_s"] = round(max(gaps), 4)
    report[f"{label}_write_stall_s"] = round(max(writes), 4)
    report[f"{label}_message"] = ctl.last_message
    if ctl.last_error:
        raise RuntimeError(f"{label} failed: {ctl.last_message}")


def state(doc, node):
    w, h = doc.width(), doc.height()
    doc.waitForDone()
    pixels = hashlib.sha256(bytes(node.projectionPixelData(0, 0, w, h))).hexdigest()
    return structure(doc), pixels


def run(params, report):
    from dfimat import document
    from dfimat.docker import DFIMatDocker
    from krita import Krita, Selection
    from PyQt5.QtWidgets import QDockWidget

    app = Krita.instance()
    report["krita"] = app.version()
    report["actions"] = {i: (app.action(i).text() if app.action(i) else None) for i in ACTION_IDS}
    report["shortcuts"] = {i: (app.action(i).shortcut().toString() if app.action(i) else None) for i in ACTION_IDS}
    window, doc, node = open_photo(app, params["image"])
    width, height = doc.width(), doc.height()

    docks = [d for d in window.qwindow().findChildren(QDockWidget) if d.windowTitle() == "DFIMat"]
    report["docker_found"] = len(docks)
    docker = docks[0]
    docker.output.setCurrentIndex(docker.output.findData("mask"))
    ctl = DFIMatDocker.controller
    delay_backend_jobs(ctl.worker)
    report["backend_delay_s"] = BACKEND_DELAY_S

    x, y, w, h = params["box"]
    sel = Selection()
    sel.select(x, y, w, h, 255)
    doc.setSelection(sel)
    original = state(doc, node)

    app.action("dfimat_select_person").trigger()
    wait_idle(ctl, "select", report)
    masks = document.dfimat_masks(node)
    report["mask_types"] = [m.type() for m in masks]
    alpha1 = bytes(masks[0].pixelData(0, 0, width, height))
    report["projection_follows_mask"] = bytes(node.projectionPixelData(0, 0, width, height))[3::4] == alpha1
    report["selection_kept"] = (doc.selection() is not None
                                and [doc.selection().x(), doc.selection().y(), doc.selection().width(),
                                     doc.selection().height()] == [x, y, w, h])
    with open(os.path.join(params["out_dir"], "alpha1.raw"), "wb") as fh:
        fh.write(alpha1)

    plane = open(params["stroke"], "rb").read()
    bgra = bytearray(width * height * 4)
    bgra[2::4] = plane
    bgra[3::4] = plane
    stroke = doc.createNode("DFIMat -", "paintlayer")
    stroke.setPixelData(bytes(bgra), 0, 0, width, height)
    doc.rootNode().addChildNode(stroke, node)
    doc.setActiveNode(stroke)  # the user just painted on it
    docker.buttons["refine"].click()
    wait_idle(ctl, "refine", report)
    masks = document.dfimat_masks(node)
    report["mask_types_after_refine"] = [m.type() for m in masks]
    with open(os.path.join(params["out_dir"], "alpha2.raw"), "wb") as fh:
        fh.write(bytes(masks[0].pixelData(0, 0, width, height)))

    undo = app.action("edit_undo")
    steps = 0
    while state(doc, node) != original and steps < MAX_UNDO_STEPS:
        undo.trigger()
        steps += 1
    report["undo_steps"] = steps
    now = state(doc, node)
    report["restored_structure"] = now[0] == original[0]
    report["restored_pixels"] = now[1] == original[1]
    report["size"] = [width, height]
    report["mask_type"] = report["mask_types"][0] if report["mask_types"] else None
    if params.get("shapes_svg"):
        report["shape_prompts"] = shape_prompts(doc, params["shapes_svg"])


def shape_prompts(doc, svg):
    """Vector shapes on a "DFIMat -" layer, read back as prompts (vector layers need a view: GUI only)."""
    from dfimat import document, intent

    layer = doc.createVectorLayer("DFIMat -")
    doc.rootNode().addChildNode(layer, None)
    layer.addShapesFromSvg(svg)
    doc.waitForDone()
    scene = document.read_scene(doc, "", "")
    clicks, scribbles = [], []
    for shape in scene.shapes:
        c, s = intent.shape_prompts(shape, scene.width, scene.height)
        clicks += c
        scribbles += s
    layer.remove()
    return {"bboxes": [list(s.bbox) for s in scene.shapes], "clicks": clicks,
            "scribble_bounds": [[min(p[0] for p in s["points"]), min(p[1] for p in s["points"]),
                                 max(p[0] for p in s["points"]), max(p[1] for p in s["points"])] for s in scribbles],
            "scribble_signs": [s["positive"] for s in scribbles]}
