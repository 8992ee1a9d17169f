"""A small stand-in for Krita's ``krita`` module: enough of Document / Node / Selection for the plug-in's logic.

Behaves like the real API where the plug-in depends on it: pixel data of RGBA/U8 layers is BGRA, ``selection()``
returns a copy or None, 5.1 has no ``createTransparencyMask`` (``Krita.instance().set_version("5.1.5")``), node
additions and removals are recorded on an undo stack (``doc.undo()``), ``setPixelData`` is not. Like kritarunner there
is no window until a test opens one (``Krita.instance().openWindow().addView(doc)``); the view's Layers-docker
selection is set with ``view.select_nodes([...])``.
"""

from __future__ import annotations

import itertools
import uuid

_ids = itertools.count(1)


class QUuid:
    def __init__(self) -> None:
        self._value = uuid.UUID(int=next(_ids))

    def toString(self) -> str:  # noqa: N802 - Krita's API names
        return "{" + str(self._value) + "}"


class QRect:
    def __init__(self, x: int, y: int, w: int, h: int) -> None:
        self._r = (x, y, w, h)

    def x(self):
        return self._r[0]

    def y(self):
        return self._r[1]

    def width(self):
        return self._r[2]

    def height(self):
        return self._r[3]


class Selection:
    def __init__(self, width: int = 0, height: int = 0) -> None:
        self._w, self._h = width, height
        self._data = bytearray(width * height)

    def _ensure(self, w: int, h: int) -> None:
        if (w, h) != (self._w, self._h) and not any(self._data):
            self._w, self._h, self._data = w, h, bytearray(w * h)

    def select(self, x, y, w, h, value):
        self._ensure(max(self._w, x + w), max(self._h, y + h))
        for row in range(y, y + h):
            self._data[row * self._w + x:row * self._w + x + w] = bytes([value]) * w

    def setPixelData(self, data, x, y, w, h):  # noqa: N802
        self._ensure(x + w, y + h)
        for row in range(h):
            self._data[(y + row) * self._w + x:(y + row) * self._w + x + w] = data[row * w:(row + 1) * w]

    def pixelData(self, x, y, w, h):  # noqa: N802
        return b"".join(bytes(self._data[(y + r) * self._w + x:(y + r) * self._w + x + w]) for r in range(h))

    def _bounds(self):
        xs = [i % self._w for i, v in enumerate(self._data) if v]
        ys = [i // self._w for i, v in enumerate(self._data) if v]
        if not xs:
            return 0, 0, 0, 0
        return min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1

    def x(self):
        return self._bounds()[0]

    def y(self):
        return self._bounds()[1]

    def width(self):
        return self._bounds()[2]

    def height(self):
        return self._bounds()[3]

    def copy(self) -> Selection:
        other = Selection(self._w, self._h)
        other._data[:] = self._data
        return other


class Shape:
    def __init__(self, name: str, bbox_pt: tuple[float, float, float, float], svg: str) -> None:
        self._name, self._bbox, self._svg = name, bbox_pt, svg

    def name(self):
        return self._name

    def boundingBox(self):  # noqa: N802
        return _RectF(*self._bbox)

    def toSvg(self):  # noqa: N802
        return self._svg


class _RectF(QRect):
    pass


class Node:
    def __init__(self, doc: Document, name: str, kind: str, paint_device: bool = True) -> None:
        self._doc, self._name, self._type = doc, name, kind
        self._uid = QUuid()
        self._children: list[Node] = []
        self._parent: Node | None = None
        channels = 1 if kind.endswith("mask") else 4
        self._channels = channels if paint_device else 0
        self._data = bytearray(doc.width() * doc.height() * self._channels)
        self._shapes: list[Shape] = []
        self.selection: Selection | None = None
        self.color = ("RGBA", "U8")
        self._visible = True

    def name(self):
        return self._name

    def setName(self, name):  # noqa: N802
        self._name = name

    def visible(self):
        return self._visible

    def setVisible(self, value):  # noqa: N802
        self._visible = bool(value)

    def type(self):
        return self._type

    def uniqueId(self):  # noqa: N802
        return self._uid

    def childNodes(self):  # noqa: N802
        return list(self._children)

    def parentNode(self):  # noqa: N802
        return self._parent

    def colorModel(self):  # noqa: N802
        return self.color[0]

    def colorDepth(self):  # noqa: N802
        return self.color[1]

    def shapes(self):
        return list(self._shapes)

    def add_shape(self, shape: Shape) -> None:
        self._shapes.append(shape)

    def addChildNode(self, child: Node, above: Node | None) -> bool:  # noqa: N802
        index = self._children.index(above) + 1 if above in self._children else len(self._children)
        self._children.insert(index, child)
        child._parent = self
        self._doc._undo.append(("add", child, self, index))
        return True

    def remove(self) -> bool:
        parent = self._parent
        if parent is None:
            return False
        index = parent._children.index(self)
        parent._children.remove(self)
        self._parent = None
        self._doc._undo.append(("remove", self, parent, index))
        return True

    def bounds(self):
        w, h = self._doc.width(), self._doc.height()
        if self._channels != 4:
            return QRect(0, 0, w, h)
        alpha = self._data[3::4]
        rows = [i // w for i, v in enumerate(alpha) if v]
        cols = [i % w for i, v in enumerate(alpha) if v]
        if not rows:
            return QRect(0, 0, 0, 0)
        return QRect(min(cols), min(rows), max(cols) - min(cols) + 1, max(rows) - min(rows) + 1)

    def _read(self, data, x, y, w, h, channels):
        stride = self._doc.width() * channels
        return b"".join(bytes(data[(y + r) * stride + x * channels:(y + r) * stride + (x + w) * channels])
                        for r in range(h))

    def pixelData(self, x, y, w, h):  # noqa: N802
        if not self._channels:
            return b""
        return self._read(self._data, x, y, w, h, self._channels)

    def setPixelData(self, data, x, y, w, h):  # noqa: N802
        if not self._channels:
            return False
        c = self._channels
        stride = self._doc.width() * c
        for r in range(h):
            self._data[(y + r) * stride + x * c:(y + r) * stride + (x + w) * c] = data[r * w * c:(r + 1) * w * c]
        return True

    def projectionPixelData(self, x, y, w, h):  # noqa: N802
        data = bytearray(self._data)
        for child in self._children:
            if child._type == "transparencymask" and child._channels:
                alpha = data[3::4]
                data[3::4] = bytes((a * m + 127) // 255 for a, m in zip(alpha, child._data, strict=True))
        return self._read(data, x, y, w, h, 4)


class Document:
    def __init__(self, width: int, height: int, resolution: float = 72.0) -> None:
        self._w, self._h, self._res = width, height, resolution
        self._undo: list[tuple] = []
        self._root = Node(self, "root", "grouplayer")
        self._active: Node | None = None
        self._selection: Selection | None = None
        self.refreshed = 0

    def width(self):
        return self._w

    def height(self):
        return self._h

    def resolution(self):
        return self._res

    def rootNode(self):  # noqa: N802
        return self._root

    def activeNode(self):  # noqa: N802
        return self._active

    def setActiveNode(self, node):  # noqa: N802
        self._active = node

    def selection(self):
        return self._selection.copy() if self._selection is not None else None

    def setSelection(self, sel):  # noqa: N802
        self._selection = sel.copy() if sel is not None else None

    def createNode(self, name, kind):  # noqa: N802
        # Like Krita: a transparency mask made this way has no paint device.
        return Node(self, name, kind, paint_device=kind != "transparencyMask")

    def createTransparencyMask(self, name):  # noqa: N802
        return Node(self, name, "transparencymask")

    def createSelectionMask(self, name):  # noqa: N802
        node = Node(self, name, "selectionmask")
        node.setSelection = lambda sel: setattr(node, "selection", sel.copy())
        return node

    def refreshProjection(self):  # noqa: N802
        self.refreshed += 1

    def waitForDone(self):  # noqa: N802
        return None

    def undo(self) -> None:
        """Take back the last node addition/removal (what Krita's undo does for these)."""
        op, node, parent, index = self._undo.pop()
        if op == "add":
            parent._children.remove(node)
            node._parent = None
        else:
            parent._children.insert(index, node)
            node._parent = parent

    def add_layer(self, name: str, bgra: bytes | None = None, kind: str = "paintlayer") -> Node:
        """Test helper: a layer added without an undo record (like opening a file)."""
        node = Node(self, name, kind)
        if bgra is not None:
            node._data[:] = bgra
        self._root._children.append(node)
        node._parent = self._root
        return node


class View:
    def __init__(self, doc: Document) -> None:
        self._doc = doc
        self._selected: list[Node] = []

    def document(self):
        return self._doc

    def selectedNodes(self):  # noqa: N802
        return list(self._selected)

    def select_nodes(self, nodes: list[Node]) -> None:
        """Test helper: what the user selected in the Layers docker (Ctrl+click)."""
        self._selected = list(nodes)


class Window:
    def __init__(self) -> None:
        self._views: list[View] = []
        self._active: View | None = None

    def views(self):
        return list(self._views)

    def activeView(self):  # noqa: N802
        return self._active

    def addView(self, doc: Document) -> View:  # noqa: N802
        view = View(doc)
        self._views.append(view)
        self._active = view
        return view


class Krita:
    _instance: Krita | None = None

    def __init__(self) -> None:
        self._docs: list[Document] = []
        self._active: Document | None = None
        self._version = "5.2.9"
        self._window: Window | None = None

    @classmethod
    def instance(cls) -> Krita:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @classmethod
    def reset(cls) -> None:
        cls._instance = None

    def set_version(self, version: str) -> None:
        self._version = version
        if version.startswith("5.1"):
            Document.createTransparencyMask = property(_missing)  # type: ignore[assignment]
        elif isinstance(Document.__dict__.get("createTransparencyMask"), property):
            del Document.createTransparencyMask
            Document.createTransparencyMask = _create_transparency_mask

    def version(self):
        return self._version

    def add_document(self, doc: Document) -> Document:
        self._docs.append(doc)
        self._active = doc
        return doc

    def documents(self):
        return list(self._docs)

    def activeDocument(self):  # noqa: N802
        return self._active

    def openWindow(self) -> Window:  # noqa: N802
        self._window = Window()
        return self._window

    def activeWindow(self):  # noqa: N802
        return self._window

    def action(self, name):
        return None


def _missing(self):
    raise AttributeError("createTransparencyMask")


def _create_transparency_mask(self, name):
    return Node(self, name, "transparencymask")


class Extension:
    def __init__(self, parent=None) -> None:
        self.parent = parent


class DockWidget:
    pass


class DockWidgetFactoryBase:
    DockRight = 1


class DockWidgetFactory:
    def __init__(self, *args) -> None:
        self.args = args


class InfoObject:
    pass
