"""The Krita extension: menu actions (Tools > Scripts) wired to the shared controller.

The actions are real Krita actions: ``dfimat.action`` (installed into the resource folder's ``actions/``) gives them
their default shortcuts, so Krita lists them in Settings > Configure Krita > Keyboard Shortcuts, where users search
and reassign them. Krita applies a user's own shortcut when the action is created, so nothing here overrides it.
The docker's buttons trigger these same actions (``trigger``), so a button and its menu entry do one thing.
"""

from __future__ import annotations

from krita import Extension

from .controller import Controller

# id, label, default shortcut (documentation only: the .action file is what Krita reads), controller method
ACTIONS = (
    ("dfimat_select_person", "DFIMat Select Person", "Ctrl+Alt+Shift+P", "select_person"),
    ("dfimat_refine", "DFIMat Refine", "Ctrl+Alt+Shift+R", "refine"),
    ("dfimat_view_matte", "DFIMat View Matte", "Ctrl+Alt+Shift+M", "toggle_view"),
    ("dfimat_reset", "DFIMat Reset Prompts", "", "reset"),
    ("dfimat_selected_layers", "DFIMat Masks for Selected Layers", "", "masks_for_selected_layers"),
    ("dfimat_split_people", "DFIMat Split People into Layers", "", "split_people"),
)
MENU = "tools/scripts"
ACTION_OF = {method: ident for ident, _label, _shortcut, method in ACTIONS}


def trigger(method: str) -> bool:
    """Fire the Krita action behind a controller command, as its menu entry and shortcut do; False without one."""
    from krita import Krita

    action = Krita.instance().action(ACTION_OF.get(method, ""))
    if action is None:
        return False
    action.trigger()
    return True


class DFIMatExtension(Extension):
    def __init__(self, parent, controller: Controller) -> None:
        super().__init__(parent)
        self.controller = controller
        self._view = None

    def setup(self) -> None:
        from PyQt5.QtCore import QCoreApplication

        from . import document
        from .worker import QtPump

        self._pump = QtPump(self.controller.worker)
        self.controller.on_status.append(lambda text, error: document.show_message(text))
        QCoreApplication.instance().aboutToQuit.connect(self.controller.worker.shutdown)

    def createActions(self, window) -> None:  # noqa: N802 - Krita's API name
        if self._view is None:
            from .view import MatteView

            self._view = MatteView(self.controller, window.qwindow())
        for ident, label, _shortcut, method in ACTIONS:
            action = window.createAction(ident, label, MENU)
            command = getattr(self.controller, method)
            if method == "toggle_view":
                action.setCheckable(True)
                self.controller.on_view.append(action.setChecked)
            # triggered(bool) passes 'checked'; the commands take no arguments.
            action.triggered.connect(lambda _checked=False, command=command: command())
