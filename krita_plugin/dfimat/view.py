"""The matte view: a window showing the current matte on black, on white, on a colour, or as a coloured overlay.

Widgets only. It reads the layer and its DFIMat result through ``document.matte_view_data`` and draws them with
Qt into its own image, so the document, its undo history and its saved file never see it. The controller says
when to show or hide it (``on_view``) and when a round wrote a new result (``on_result``).
"""

from __future__ import annotations

from PyQt5.QtCore import Qt
from PyQt5.QtGui import QColor, QImage, QPainter, QPixmap
from PyQt5.QtWidgets import QColorDialog, QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from . import document
from .controller import VIEW_MODES, Controller
from .document import DocumentError

OVERLAY_OPACITY = 0.5
SOLID = {"black": (0, 0, 0), "white": (255, 255, 255)}


def compose(bgra: bytes, alpha: bytes, width: int, height: int, mode: str, color: tuple[int, int, int]) -> QImage:
    """The layer's pixels with the matte applied over a solid colour, or tinted where the matte is not."""
    # Krita's RGBA/U8 bytes are B, G, R, A: the memory layout of QImage.Format_ARGB32 on little-endian machines.
    photo = QImage(bgra, width, height, width * 4, QImage.Format_ARGB32).copy()
    matte = QImage(alpha, width, height, width, QImage.Format_Grayscale8).copy()
    out = QImage(width, height, QImage.Format_ARGB32_Premultiplied)
    painter = QPainter(out)
    if mode == "overlay":
        out.fill(QColor(0, 0, 0))
        painter.drawImage(0, 0, photo)
        tint = QImage(width, height, QImage.Format_ARGB32)
        tint.fill(QColor(*color))
        matte.invertPixels()
        tint.setAlphaChannel(matte)
        painter.setOpacity(OVERLAY_OPACITY)
        painter.drawImage(0, 0, tint)
    else:
        out.fill(QColor(*SOLID.get(mode, color)))
        photo.setAlphaChannel(matte)
        painter.drawImage(0, 0, photo)
    painter.end()
    return out


class MatteView(QWidget):
    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        # A tool window: it floats over Krita's window and closes with it.
        super().__init__(parent, Qt.Tool)
        self.setWindowTitle("DFIMat matte view")
        self.setObjectName("dfimat_matte_view")
        self.resize(520, 560)
        self._controller = controller
        self._image: QImage | None = None
        layout = QVBoxLayout(self)
        self.picture = QLabel("", self)
        self.picture.setAlignment(Qt.AlignCenter)
        self.picture.setMinimumSize(160, 120)
        layout.addWidget(self.picture, 1)
        row = QHBoxLayout()
        self.mode = QComboBox(self)
        for label, value in VIEW_MODES:
            self.mode.addItem(label, value)
        self.mode.setCurrentIndex(max(0, self.mode.findData(controller.settings.view_mode)))
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self.color = QPushButton("Colour…", self)
        self.color.clicked.connect(self._pick_color)
        row.addWidget(self.mode, 1)
        row.addWidget(self.color)
        layout.addLayout(row)
        self.note = QLabel("", self)
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self._show_color()
        controller.on_view.append(self._set_shown)
        controller.on_result.append(lambda _node_id: self.refresh() if self.isVisible() else None)

    def refresh(self) -> None:
        try:
            doc, node = self._controller.view_target()
            bgra, alpha, width, height = document.matte_view_data(doc, node)
        except DocumentError as exc:
            self._image = None
            self.picture.setPixmap(QPixmap())
            self.picture.setText(str(exc))
            return
        settings = self._controller.settings
        self._image = compose(bgra, alpha, width, height, settings.view_mode, settings.view_color)
        self.note.setText(f"'{node.name()}': {self.mode.currentText().lower()}. Nothing in the image changes.")
        self._fit()

    def _fit(self) -> None:
        if self._image is not None:
            self.picture.setText("")
            self.picture.setPixmap(QPixmap.fromImage(self._image).scaled(
                self.picture.size(), Qt.KeepAspectRatio, Qt.SmoothTransformation))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().closeEvent(event)
        self._controller.set_view(False)

    def _set_shown(self, shown: bool) -> None:
        if shown:
            self.show()
            self.raise_()
            self.refresh()
        else:
            self.hide()

    def _mode_changed(self, index: int) -> None:
        self._controller.settings.view_mode = self.mode.itemData(index)
        self._show_color()
        self.refresh()

    def _pick_color(self) -> None:
        chosen = QColorDialog.getColor(QColor(*self._controller.settings.view_color), self, "DFIMat view colour")
        if chosen.isValid():
            self._controller.settings.view_color = (chosen.red(), chosen.green(), chosen.blue())
            self._show_color()
            self.refresh()

    def _show_color(self) -> None:
        r, g, b = self._controller.settings.view_color
        self.color.setStyleSheet(f"background-color: rgb({r}, {g}, {b});")
        self.color.setEnabled(self._controller.settings.view_mode in ("colour", "overlay"))
