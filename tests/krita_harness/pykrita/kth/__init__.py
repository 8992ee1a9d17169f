"""Test-only Krita plug-in: once the main window is up, run ``$KTH_MODULE.main()``, write its JSON result to
``$KTH_OUT`` and quit Krita. A watchdog ends the process if anything hangs (e.g. a dialog nobody can click).
"""

import importlib
import json
import os
import threading
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QTimer

WATCHDOG_S = float(os.environ.get("KTH_WATCHDOG_S", "300"))


def _write(result):
    with open(os.environ["KTH_OUT"], "w") as fh:
        json.dump(result, fh, indent=1)


def _quit():
    app = Krita.instance()
    for doc in app.documents():
        # Without this Krita asks whether to save, and the dialog blocks the quit forever.
        doc.setBatchmode(True)
        doc.setModified(False)
        doc.close()
    app.action("file_quit").trigger()


def _go():
    try:
        module = importlib.import_module(os.environ["KTH_MODULE"])
        result = module.main()
    except Exception:
        result = {"ok": False, "error": traceback.format_exc()}
    _write(result)
    # The result is on disk; if Krita's own shutdown hangs (a dialog, a stuck thread), end the process anyway.
    done = threading.Timer(15, lambda: os._exit(0))
    done.daemon = True
    done.start()
    _quit()


class Harness(Extension):
    def setup(self):
        pass

    def createActions(self, window):
        if not os.environ.get("KTH_MODULE"):
            return
        timer = threading.Timer(WATCHDOG_S, lambda: os._exit(3))
        timer.daemon = True
        timer.start()
        QTimer.singleShot(500, _go)


Krita.instance().addExtension(Harness(Krita.instance()))
