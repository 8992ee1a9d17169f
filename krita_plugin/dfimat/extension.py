"""The Krita extension: menu actions (Tools > Scripts) wired to the shared controller."""

from __future__ import annotations

from krita import Extension

from .controller import Controller

ACTIONS = (
    # id, label, shortcut, controller method
    ("dfimat_select_person", "DFIMat Select Person", "Ctrl+Alt+Shift+P", "select_person"),
    ("dfimat_refine", "DFIMat Refine Selection", "Ctrl+Alt+Shift+R", "refine"),
    ("dfimat_reset", "DFIMat Reset Prompts", "", "reset"),
    ("dfimat_selected_layers", "DFIMat Masks for Selected Layers", "", "masks_for_selected_layers"),
    ("dfimat_split_people", "DFIMat Split People into Layers", "", "split_people"),
)
MENU = "tools/scripts"


class DFIMatExtension(Extension):
    def __init__(self, parent, controller: Controller) -> None:
        super().__init__(parent)
        self.controller = controller

    def setup(self) -> None:
        from PyQt5.QtCore import QCoreApplication

        from . import document
        from .worker import QtPump

        self._pump = QtPump(self.controller.worker)
        self.controller.on_status.append(lambda text, error: document.show_message(text))
        QCoreApplication.instance().aboutToQuit.connect(self.controller.worker.shutdown)

    def createActions(self, window) -> None:
        from PyQt5.QtGui import QKeySequence

        for ident, label, shortcut, method in ACTIONS:
            action = window.createAction(ident, label, MENU)
            if shortcut:
                action.setShortcut(QKeySequence(shortcut))
            command = getattr(self.controller, method)
            # triggered(bool) passes 'checked'; the commands take no arguments.
            action.triggered.connect(lambda _checked=False, command=command: command())
