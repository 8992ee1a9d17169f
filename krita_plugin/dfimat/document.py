"""Every call into Krita's API lives here; the rest of the plug-in sees plain values.

Facts this module relies on (checked on Krita 5.1.5 and 5.2.9): RGBA/U8 pixel bytes are BGRA; ``doc.selection()``
returns a copy or None; ``createTransparencyMask`` exists from 5.2 only and ``createNode(..., "transparencyMask")``
yields a mask without a paint device; ``setPixelData`` is not undoable but adding/removing a node is, so results are
always written into a fresh node *before* it is added. Call these functions on Krita's GUI thread only.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass

from krita import Krita, Selection

from .intent import Scene, StrokeLayer, VectorShape, prompt_layer_sign
from .pixels import alpha_channel, with_alpha
from .undo import named_step

MASK_NAME = "DFIMat mask"
SELECTION_MASK_NAME = "DFIMat selection"
CUTOUT_NAME = "DFIMat cutout"
OUTPUTS = ("mask", "selection", "layer")
_PIXEL_LAYERS = ("paintlayer", "grouplayer", "filelayer", "clonelayer", "filllayer", "vectorlayer")
_MASK_TYPES = ("transparencymask", "selectionmask", "filtermask", "colorizemask", "transformmask")


class DocumentError(ValueError):
    """The document cannot be used as asked; the message tells the user what to do. Nothing was changed."""


@dataclass(frozen=True)
class Target:
    """The layer to matte, read on the GUI thread: ``bgra`` is the whole canvas, width x height x 4."""

    node_id: str
    name: str
    width: int
    height: int
    bgra: bytes

    @property
    def key(self) -> str:
        # The backend keeps a session per key + content hash, so a re-run on the same layer continues it.
        return f"krita:{self.node_id}"


def krita_version() -> tuple[int, int]:
    parts = Krita.instance().version().split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def active_document():
    doc = Krita.instance().activeDocument()
    if doc is None:
        raise DocumentError("Open an image first: DFIMat works on the active document.")
    return doc


def node_id(node) -> str:
    return node.uniqueId().toString()


def walk(node):
    """All descendants of ``node``, depth first."""
    for child in node.childNodes():
        yield child
        yield from walk(child)


def find_node(uid: str):
    """(document, node) holding the node with unique id ``uid``, or (None, None) if it no longer exists."""
    for doc in Krita.instance().documents():
        for node in walk(doc.rootNode()):
            if node_id(node) == uid:
                return doc, node
    return None, None


def is_prompt_layer(node) -> bool:
    return prompt_layer_sign(node.name()) is not None


def pick_target_node(doc, preferred_id: str | None = None):
    """The layer to matte: the active layer, or the last target when the user is painting on a prompt layer.

    A mask selected in the layer stack stands for its parent layer.
    """
    node = doc.activeNode()
    if node is not None and node.type() in _MASK_TYPES:
        node = node.parentNode()
    if node is not None and node.type() in _PIXEL_LAYERS and not is_prompt_layer(node):
        return node
    if preferred_id:
        _, previous = find_node(preferred_id)
        if previous is not None:
            return previous
    if node is None:
        # No view (a script, or a document not shown): the top-most ordinary layer.
        for candidate in reversed(list(walk(doc.rootNode()))):
            if candidate.type() in _PIXEL_LAYERS and not is_prompt_layer(candidate):
                return candidate
    # Painting on a "DFIMat +" layer: the photo is the nearest ordinary layer below it.
    siblings = node.parentNode().childNodes() if node is not None and node.parentNode() else []
    below = [n for n in siblings[: siblings.index(node)]] if node in siblings else []
    for candidate in reversed(below):
        if candidate.type() in _PIXEL_LAYERS and not is_prompt_layer(candidate):
            return candidate
    raise DocumentError("Select the layer with the person (a paint layer) in the Layers docker.")


def read_target(doc, node) -> Target:
    """The layer's own pixels (before its masks) over the whole canvas."""
    if node.colorModel() != "RGBA" or node.colorDepth() != "U8":
        raise DocumentError(
            f"Layer '{node.name()}' is {node.colorModel()}/{node.colorDepth()}; DFIMat needs 8-bit RGBA. "
            "Convert it with Image > Convert Image Color Space (RGB/Alpha, 8-bit integer)."
        )
    width, height = doc.width(), doc.height()
    if node.type() == "paintlayer":
        data = node.pixelData(0, 0, width, height)
    else:
        data = node.projectionPixelData(0, 0, width, height)
    data = bytes(data)
    if len(data) != width * height * 4:
        raise DocumentError(f"Krita returned {len(data)} bytes for layer '{node.name()}'; expected {width * height * 4}.")
    return Target(node_id(node), node.name(), width, height, data)


def selection_bounds(doc) -> tuple[int, int, int, int] | None:
    sel = doc.selection()
    if sel is None or sel.width() <= 0 or sel.height() <= 0:
        return None
    return sel.x(), sel.y(), sel.width(), sel.height()


def _canvas_rect(node, width: int, height: int) -> tuple[int, int, int, int] | None:
    rect = node.bounds()
    x0, y0 = max(0, rect.x()), max(0, rect.y())
    x1, y1 = min(width, rect.x() + rect.width()), min(height, rect.y() + rect.height())
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def read_scene(doc, docker_text: str = "", target_name: str = "") -> Scene:
    """Selection bounds, visible painted prompt layers and prompt shapes of ``doc`` as a :class:`Scene`."""
    width, height = doc.width(), doc.height()
    strokes, shapes = [], []
    scale = doc.resolution() / 72.0 if doc.resolution() else 1.0
    for node in walk(doc.rootNode()):
        # Hiding a prompt layer switches its strokes off without deleting them.
        if not is_prompt_layer(node) or not node.visible():
            continue
        if node.type() == "paintlayer":
            rect = _canvas_rect(node, width, height)
            if rect is None:
                continue
            x, y, w, h = rect
            strokes.append(StrokeLayer(node.name(), x, y, w, h, alpha_channel(bytes(node.pixelData(x, y, w, h)))))
        elif node.type() == "vectorlayer":
            for shape in node.shapes():
                box = shape.boundingBox()  # points
                shapes.append(VectorShape(
                    node.name(), shape.name(),
                    (box.x() * scale, box.y() * scale, box.width() * scale, box.height() * scale),
                    shape.toSvg(),
                ))
    active = doc.activeNode()
    layer_name = target_name or (active.name() if active is not None else "")
    return Scene(width, height, selection_bounds(doc), tuple(strokes), tuple(shapes), layer_name, docker_text)


def selected_layers(doc) -> list:
    """Layers selected in the Layers docker of the active view (needs a window), prompt layers excluded."""
    window = Krita.instance().activeWindow()
    view = window.activeView() if window is not None else None
    nodes = list(view.selectedNodes()) if view is not None and view.document() is not None else []
    if not nodes and doc.activeNode() is not None:
        nodes = [doc.activeNode()]
    return [n for n in nodes if n.type() in _PIXEL_LAYERS and not is_prompt_layer(n)]


def check_output(doc, alpha: bytes, width: int, height: int, output: str) -> None:
    """Raise :class:`DocumentError` unless ``alpha`` can be written into ``doc`` as ``output``; changes nothing.

    Batches call it for every result first, so that one unusable result stops the batch before any write.
    """
    if output not in OUTPUTS:
        raise DocumentError(f"Unknown output '{output}'; choose one of {', '.join(OUTPUTS)}.")
    _checked_alpha(doc, alpha, width, height)


def _checked_alpha(doc, alpha: bytes, width: int, height: int) -> None:
    if (width, height) != (doc.width(), doc.height()):
        raise DocumentError(
            f"The image is now {doc.width()}x{doc.height()} but the result is {width}x{height} "
            "(was it resized meanwhile?). Nothing was changed; run DFIMat again."
        )
    if len(alpha) != width * height:
        raise DocumentError(f"The backend sent {len(alpha)} alpha bytes for a {width}x{height} image; nothing was changed.")


def dfimat_masks(node) -> list:
    return [c for c in node.childNodes()
            if c.type() in ("transparencymask", "selectionmask") and c.name() in (MASK_NAME, SELECTION_MASK_NAME)]


def write_output(doc, node, alpha: bytes, width: int, height: int, output: str) -> str:
    """Write the alpha as ``output`` ("mask", "selection" or "layer"); returns what was done, for the user."""
    return write_result(doc, node, alpha, width, height, output)[0]


def write_result(doc, node, alpha: bytes, width: int, height: int, output: str,
                 title: str | None = None) -> tuple[str, str]:
    """:func:`write_output`, also returning an identity of what was written, for :func:`result_present`.

    Every change is a node addition/removal or a selection change, so Krita's undo takes it back; with a
    ``title`` they form one undo step of that name where Krita allows it (``undo.named_step``).
    """
    check_output(doc, alpha, width, height, output)
    # Adding and removing nodes moves Krita's active layer; the user stays on the layer they were painting on.
    active = doc.activeNode()
    with named_step(doc, title) if title else nullcontext():
        if output == "selection":
            doc.setSelection(_selection_from(alpha, width, height))
            done, added = "Selection replaced by the DFIMat result.", None
        elif output == "layer":
            done, added = _add_cutout_layer(doc, node, alpha, width, height)
        else:
            done, added = _add_mask(doc, node, alpha, width, height)
        doc.refreshProjection()
        doc.waitForDone()
    if active is not None and find_node(node_id(active))[1] is not None:
        doc.setActiveNode(active)
    # Fingerprinted only now: Krita applies setSelection asynchronously, and what counts is what the document shows.
    return done, selection_fingerprint(doc) if added is None else f"node:{node_id(added)}"


def selection_fingerprint(doc) -> str:
    """The global selection's bounds and a hash of its pixels: cheap, and changes with any undo or edit of it."""
    sel = doc.selection()
    if sel is None or sel.width() <= 0 or sel.height() <= 0:
        return "selection:none"
    x, y, w, h = sel.x(), sel.y(), sel.width(), sel.height()
    return f"selection:{x},{y},{w},{h}:{hashlib.sha1(bytes(sel.pixelData(x, y, w, h))).hexdigest()}"


def result_present(doc, identity: str) -> bool:
    """Whether the result :func:`write_result` identified is still in the document (not undone or deleted).

    Undo removes an added node from the layer tree (redo puts the same node, same unique id, back).
    """
    kind, _, uid = identity.partition(":")
    if kind == "node":
        return find_node(uid)[1] is not None
    return selection_fingerprint(doc) == identity


def _selection_from(alpha: bytes, width: int, height: int):
    sel = Selection()
    sel.setPixelData(alpha, 0, 0, width, height)
    return sel


def _add_cutout_layer(doc, node, alpha: bytes, width: int, height: int,
                      name: str = CUTOUT_NAME) -> tuple[str, object]:
    source = bytes(node.projectionPixelData(0, 0, width, height)) if node.type() != "paintlayer" \
        else bytes(node.pixelData(0, 0, width, height))
    layer = doc.createNode(name, "paintlayer")
    layer.setPixelData(with_alpha(source, alpha), 0, 0, width, height)
    parent = node.parentNode() or doc.rootNode()
    parent.addChildNode(layer, node)
    return f"Added layer '{name}' above '{node.name()}'.", layer


def _add_mask(doc, node, alpha: bytes, width: int, height: int) -> tuple[str, object]:
    old = dfimat_masks(node)
    done = (f"Updated transparency mask '{MASK_NAME}' on '{node.name()}'." if old
            else f"Added transparency mask '{MASK_NAME}' to '{node.name()}'.")
    if hasattr(doc, "createTransparencyMask"):
        mask = doc.createTransparencyMask(MASK_NAME)
        mask.setPixelData(alpha, 0, 0, width, height)
        node.addChildNode(mask, None)
    elif _gui_mask_available(doc):
        mask = _add_mask_through_action(doc, node, alpha, width, height)
    else:
        # Krita 5.1 without a window: no API creates a working transparency mask. A local selection mask keeps
        # the result on the layer (activate it to get the selection); see docs/krita.md.
        mask = doc.createSelectionMask(SELECTION_MASK_NAME)
        mask.setSelection(_selection_from(alpha, width, height))
        node.addChildNode(mask, None)
        done = (f"Krita {'.'.join(map(str, krita_version()))} cannot create a transparency mask from a script "
                f"without a window: added local selection mask '{SELECTION_MASK_NAME}' to '{node.name()}'.")
    for previous in old:
        previous.remove()
    return done, mask


def _gui_mask_available(doc) -> bool:
    app = Krita.instance()
    window = app.activeWindow()
    view = window.activeView() if window is not None else None
    return (app.action("add_new_transparency_mask") is not None and view is not None
            and view.document() is not None and view.document().rootNode() is not None
            and node_id(view.document().rootNode()) == node_id(doc.rootNode()))


def _add_mask_through_action(doc, node, alpha: bytes, width: int, height: int):
    """Krita 5.1: the "Add Transparency Mask" action turns the global selection into a working mask."""
    app = Krita.instance()
    before = {node_id(c) for c in node.childNodes()}
    previous_selection = doc.selection()
    previous_active = doc.activeNode()
    # The action deselects the matte within its own undo step, so undoing that step selects the matte again. An
    # undoable Deselect of the user's selection first (Select All + Deselect when there is none), in the same
    # DFIMat undo step (undo.py), makes undoing the round end on the user's selection, or on none.
    if previous_selection is None and app.action("select_all") is not None:
        app.action("select_all").trigger()
        doc.waitForDone()
    if app.action("deselect") is not None:
        app.action("deselect").trigger()
        doc.waitForDone()
    doc.setSelection(_selection_from(alpha, width, height))
    doc.setActiveNode(node)
    app.action("add_new_transparency_mask").trigger()
    doc.waitForDone()
    added = [c for c in node.childNodes() if node_id(c) not in before and c.type() == "transparencymask"]
    try:
        if not added:
            raise DocumentError("Krita did not create the transparency mask; nothing was changed.")
        added[0].setName(MASK_NAME)
        return added[0]
    finally:
        if previous_selection is not None:
            doc.setSelection(previous_selection)
        else:
            app.action("deselect").trigger()
        if previous_active is not None:
            doc.setActiveNode(previous_active)


def matte_view_data(doc, node) -> tuple[bytes, bytes, int, int]:
    """What the matte view shows for ``node``: its own pixels (BGRA) and its current matte (1 byte/px), canvas size.

    The matte is the layer's DFIMat mask, else the global selection (a selection output), else a "DFIMat cutout"
    layer's alpha above it. Only reads: the view changes nothing in the document.
    """
    width, height = doc.width(), doc.height()
    target = read_target(doc, node)
    for mask in reversed(dfimat_masks(node)):
        data = bytes(mask.pixelData(0, 0, width, height))
        if len(data) == width * height:
            return target.bgra, data, width, height
    sel = doc.selection()
    if sel is not None and sel.width() > 0 and sel.height() > 0:
        return target.bgra, bytes(sel.pixelData(0, 0, width, height)), width, height
    parent = node.parentNode() or doc.rootNode()
    for sibling in parent.childNodes():
        if sibling.name() == CUTOUT_NAME and sibling.type() == "paintlayer":
            return target.bgra, alpha_channel(bytes(sibling.pixelData(0, 0, width, height))), width, height
    raise DocumentError(f"Layer '{node.name()}' has no DFIMat result to view yet: run DFIMat Select Person first.")


def add_person_layers(doc, node, alphas: list[bytes], width: int, height: int) -> str:
    """One cut-out layer per person above ``node`` ("Split people into layers")."""
    for alpha in alphas:
        _checked_alpha(doc, alpha, width, height)
    for index, alpha in enumerate(alphas, start=1):
        _add_cutout_layer(doc, node, alpha, width, height, name=f"DFIMat person {index}")
    doc.refreshProjection()
    doc.waitForDone()
    return f"Added {len(alphas)} person layer(s) above '{node.name()}'."


def show_message(text: str) -> None:
    """A non-blocking message on the canvas (no modal dialog: the GUI must never wait on the user here)."""
    window = Krita.instance().activeWindow()
    view = window.activeView() if window is not None else None
    if view is not None:
        from PyQt5.QtGui import QIcon

        view.showFloatingMessage(text, QIcon(), 4000, 1)
