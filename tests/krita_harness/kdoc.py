"""Document helpers shared by the scripts that run inside Krita (kritarunner and the GUI harness)."""

import json
import os
import traceback


def run_and_report(run):
    """Run ``run(params, report)`` with the test's parameters ($KTH_PARAMS) and write the report to its out_dir: a
    script inside Krita cannot fail the test by raising (kritarunner exits 0 either way), so the test reads this."""
    params = json.load(open(os.environ["KTH_PARAMS"]))
    report = {"ok": False}
    try:
        run(params, report)
        report["ok"] = True
    except Exception:
        report["error"] = traceback.format_exc()
    with open(os.path.join(params["out_dir"], "report.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    return report


def open_photo(app, path):
    """Open ``path`` in a new view of the active window, wait for it, and make the layer the plug-in would work on
    active: (window, document, node)."""
    from dfimat import document

    window = app.activeWindow()
    doc = app.openDocument(path)
    window.addView(doc)
    app.setActiveDocument(doc)
    doc.waitForDone()
    node = document.pick_target_node(doc)
    doc.setActiveNode(node)
    return window, doc, node


def structure(doc):
    """The layer tree as (depth, name, type) rows: comparing two of them tells whether undo restored it."""
    out = []

    def visit(node, depth):
        for child in node.childNodes():
            out.append((depth, child.name(), child.type()))
            visit(child, depth + 1)

    visit(doc.rootNode(), 0)
    return out
