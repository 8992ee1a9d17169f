"""The DFIMat docker: widgets only. Every button calls the shared controller; the controller reports back."""

from __future__ import annotations

from krita import DockWidget
from PyQt5.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .controller import Controller
from .extension import trigger

OUTPUT_CHOICES = (("Transparency mask", "mask"), ("Selection", "selection"), ("New layer", "layer"))
TITLE = "DFIMat"


class DFIMatDocker(DockWidget):
    controller: Controller | None = None  # set by the plug-in before Krita creates dockers

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(TITLE)
        controller = type(self).controller
        if controller is None:
            raise RuntimeError("DFIMatDocker.controller must be set before the docker is created")
        self._controller = controller
        root = QWidget(self)
        layout = QVBoxLayout(root)

        self.text = QLineEdit(root)
        self.text.setPlaceholderText("Who to select, e.g. “the woman in the red coat” (optional)")
        self.text.textChanged.connect(self._text_changed)
        layout.addWidget(self.text)

        self.output = QComboBox(root)
        for label, value in OUTPUT_CHOICES:
            self.output.addItem(label, value)
        self.output.currentIndexChanged.connect(self._output_changed)
        row = QHBoxLayout()
        row.addWidget(QLabel("Result as:", root))
        row.addWidget(self.output, 1)
        layout.addLayout(row)

        grid = QGridLayout()
        self.buttons = {}
        for index, (label, method, tip) in enumerate((
            ("Select", "select_person", "Select the person from the selection, strokes, shapes and text"),
            ("Refine", "refine", "Another round: add new 'DFIMat +' / 'DFIMat -' strokes to the last result"),
            ("View matte", "toggle_view", "Show the matte on a colour or as an overlay (changes nothing)"),
            ("Reset", "reset", "Forget earlier rounds for this layer"),
            ("Selected layers", "masks_for_selected_layers", "The same prompts on every selected layer"),
            ("Split people", "split_people", "One new layer per person found in the active layer"),
        )):
            button = QPushButton(label, root)
            button.setToolTip(tip)
            command = getattr(controller, method)
            # The button fires the same Krita action as the menu entry and its shortcut.
            button.clicked.connect(lambda _checked=False, method=method, command=command: trigger(method) or command())
            grid.addWidget(button, index // 3, index % 3)
            self.buttons[method] = button
        self.buttons["toggle_view"].setCheckable(True)
        controller.on_view.append(self.buttons["toggle_view"].setChecked)
        layout.addLayout(grid)

        row = QHBoxLayout()
        self.progress = QProgressBar(root)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.cancel = QPushButton("Cancel", root)
        self.cancel.setEnabled(False)
        self.cancel.clicked.connect(lambda _checked=False: controller.cancel())
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel)
        layout.addLayout(row)

        self.status = QLabel("Make a selection around a person, then press Select.", root)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setWidget(root)

        self.text.setText(controller.settings.text)
        self._select_output(controller.settings.output)
        controller.on_status.append(self._show_status)
        controller.on_progress.append(self._show_progress)
        controller.on_busy.append(self._show_busy)

    def canvasChanged(self, canvas) -> None:
        # Prompts are read from the active document when a button is pressed; nothing to track per canvas.
        return None

    def _select_output(self, value: str) -> None:
        for index in range(self.output.count()):
            if self.output.itemData(index) == value:
                self.output.setCurrentIndex(index)

    def _text_changed(self, text: str) -> None:
        self._controller.settings.text = text

    def _output_changed(self, index: int) -> None:
        self._controller.settings.output = self.output.itemData(index)

    def _show_status(self, text: str, error: bool) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #d04040;" if error else "")

    def _show_progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(round(100 * max(0.0, min(1.0, fraction)))))
        if text:
            self.progress.setFormat(f"{text} %p%")

    def _show_busy(self, busy: bool) -> None:
        self.cancel.setEnabled(busy)
        if not busy:
            self.progress.setValue(0)
            self.progress.setFormat("%p%")
