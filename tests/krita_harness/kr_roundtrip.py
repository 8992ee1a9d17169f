"""Runs inside a real Krita (``kritarunner -s kr_roundtrip -f main``, or the GUI harness plug-in).

Drives the installed DFIMat plug-in's controller on a real photo: selection around one person -> Select, then a
"DFIMat -" paint layer -> Refine, then takes everything back. Writes raw alphas and a JSON report for the pytest side
(kritarunner exits 0 even when a script raises, so the report is the only trustworthy outcome).

Parameters come from the JSON file named by ``$KTH_PARAMS``: image, box [x, y, w, h], stroke (path of a raw
width*height alpha plane for the "DFIMat -" layer), output ("mask"), out_dir, undo ("remove" or "action").
"""

from __future__ import annotations

import hashlib
import os
import time

from kdoc import run_and_report, structure

WAIT_S = 600.0


def main(*args):
    run_and_report(run)
    return 0


def wait(ctl, job, report, label):
    if job is None:
        raise RuntimeError(f"{label}: nothing was started: {ctl.last_message}")
    started = time.monotonic()
    while ctl.worker.busy:
        # The same pump Krita's GUI QTimer runs. Ticks that only poll must return at once (the GUI never waits
        # for the backend); the last tick also writes the result into the document, timed separately.
        t0 = time.monotonic()
        busy_before = ctl.worker.busy
        ctl.worker.pump()
        spent = time.monotonic() - t0
        key = "max_poll_tick_s" if busy_before and ctl.worker.busy else "write_tick_s"
        report[key] = round(max(report.get(key, 0.0), spent), 4)
        if time.monotonic() - started > WAIT_S:
            ctl.cancel()
            raise RuntimeError(f"{label}: no result after {WAIT_S} s")
        time.sleep(0.02)
    report[f"{label}_s"] = round(time.monotonic() - started, 3)
    report[f"{label}_message"] = ctl.last_message
    report[f"{label}_error"] = ctl.last_error
    if ctl.last_error:
        raise RuntimeError(f"{label} failed: {ctl.last_message}")


def mask_alpha(node, width, height):
    """The alpha of the DFIMat mask on ``node``: (type, bytes)."""
    from dfimat import document

    masks = document.dfimat_masks(node)
    if len(masks) != 1:
        raise RuntimeError(f"expected one DFIMat mask, found {[(m.name(), m.type()) for m in masks]}")
    data = bytes(masks[0].pixelData(0, 0, width, height))
    if len(data) != width * height:
        raise RuntimeError(f"mask {masks[0].type()} returned {len(data)} bytes")
    return masks[0].type(), data


def run(params, report):
    from dfimat import controller, document
    from krita import Krita, Selection

    app = Krita.instance()
    report["krita"] = app.version()
    doc = app.openDocument(params["image"])
    if doc is None:
        raise RuntimeError(f"Krita could not open {params['image']}")
    doc.waitForDone()
    width, height = doc.width(), doc.height()
    node = document.pick_target_node(doc)
    report["size"] = [width, height]
    original_pixels = hashlib.sha256(bytes(node.projectionPixelData(0, 0, width, height))).hexdigest()

    x, y, w, h = params["box"]
    sel = Selection()
    sel.select(x, y, w, h, 255)
    doc.setSelection(sel)  # the user's selection (a global selection node): part of the starting state
    doc.waitForDone()
    original_structure = structure(doc)

    ctl = controller.Controller()
    ctl.settings.output = params.get("output", "mask")
    ctl.settings.text = params.get("text", "")
    wait(ctl, ctl.select_person(doc, node), report, "select")
    kind, alpha1 = mask_alpha(node, width, height)
    report["mask_type"] = kind
    report["projection_follows_mask"] = bytes(node.projectionPixelData(0, 0, width, height))[3::4] == alpha1
    with open(os.path.join(params["out_dir"], "alpha1.raw"), "wb") as fh:
        fh.write(alpha1)

    if params.get("stroke"):
        plane = open(params["stroke"], "rb").read()
        bgra = bytearray(width * height * 4)
        bgra[2::4] = plane  # red paint where the user does not want the person
        bgra[3::4] = plane
        stroke = doc.createNode("DFIMat -", "paintlayer")
        stroke.setPixelData(bytes(bgra), 0, 0, width, height)
        doc.rootNode().addChildNode(stroke, node)
        wait(ctl, ctl.refine(doc, node), report, "refine")
        _, alpha2 = mask_alpha(node, width, height)
        with open(os.path.join(params["out_dir"], "alpha2.raw"), "wb") as fh:
            fh.write(alpha2)
        stroke.remove()

    report["structure_with_result"] = structure(doc)
    # Krita's undo for node additions is an action of a window; without one (kritarunner) the documented equivalent
    # is removing the added node, which is exactly what undoing the addition does.
    if params.get("undo") == "action":
        undo = app.action("edit_undo")
        for _ in range(params.get("undo_steps", 1)):
            undo.trigger()
            doc.waitForDone()
    else:
        for mask in document.dfimat_masks(node):
            mask.remove()
    doc.refreshProjection()
    doc.waitForDone()
    report["restored_structure"] = structure(doc) == original_structure
    report["restored_pixels"] = (
        hashlib.sha256(bytes(node.projectionPixelData(0, 0, width, height))).hexdigest() == original_pixels)

    if params.get("split"):
        wait(ctl, ctl.split_people(doc, node), report, "split")
        people = [n for n in doc.rootNode().childNodes() if n.name().startswith("DFIMat person ")]
        report["split_layers"] = [n.name() for n in people]
        for index, layer in enumerate(people):
            with open(os.path.join(params["out_dir"], f"person{index}.raw"), "wb") as fh:
                fh.write(bytes(layer.pixelData(0, 0, width, height))[3::4])

    if params.get("text_only"):
        # The docker's text alone: no selection (an empty one is no box), no stroke layers; Select starts over.
        doc.setSelection(Selection())
        doc.waitForDone()
        ctl.settings.text = params["text_only"]
        wait(ctl, ctl.select_person(doc, node), report, "text")
        report["text_selection"] = document.selection_bounds(doc)
        _, alpha = mask_alpha(node, width, height)
        with open(os.path.join(params["out_dir"], "text.raw"), "wb") as fh:
            fh.write(alpha)
    ctl.worker.shutdown()
