"""Mask writing and document reading of the Krita plug-in against the mock ``krita`` module."""

from __future__ import annotations

import pytest

from tests.mock_krita.loader import submodule

document = submodule("document")
import krita  # noqa: E402  (the mock, put on sys.path by the loader)

W, H = 12, 8


def photo_bgra(w=W, h=H):
    return bytes(v for i in range(w * h) for v in (i % 251, 7, 200, 255))


def ramp_alpha(w=W, h=H):
    return bytes((x * 255) // (w - 1) for _ in range(h) for x in range(w))


@pytest.fixture
def app():
    krita.Krita.reset()
    instance = krita.Krita.instance()
    yield instance
    instance.set_version("5.2.9")
    krita.Krita.reset()


@pytest.fixture
def doc(app):
    d = app.add_document(krita.Document(W, H))
    layer = d.add_layer("photo", photo_bgra())
    d.setActiveNode(layer)
    return d


def layer_of(doc, name):
    return next(n for n in doc.rootNode().childNodes() if n.name() == name)


def snapshot(doc):
    return [(n.name(), n.type(), [c.name() for c in n.childNodes()]) for n in doc.rootNode().childNodes()]


def test_read_target_returns_canvas_pixels_and_refuses_other_colour_spaces(doc):
    node = layer_of(doc, "photo")
    target = document.read_target(doc, node)
    assert (target.width, target.height, target.bgra) == (W, H, photo_bgra())
    assert target.key.startswith("krita:{")
    node.color = ("GRAYA", "U16")
    with pytest.raises(document.DocumentError, match="8-bit RGBA"):
        document.read_target(doc, node)


def test_painting_on_a_prompt_layer_still_targets_the_photo(doc):
    stroke = doc.add_layer("DFIMat -")
    doc.setActiveNode(stroke)
    assert document.pick_target_node(doc).name() == "photo"
    only = krita.Document(W, H)
    only.setActiveNode(only.add_layer("DFIMat +"))
    with pytest.raises(document.DocumentError, match="Layers docker"):
        document.pick_target_node(only)


def test_read_scene_collects_selection_strokes_and_shapes(doc):
    sel = krita.Selection()
    sel.select(2, 1, 5, 6, 255)
    doc.setSelection(sel)
    stroke = doc.add_layer("DFIMat -")
    data = bytearray(W * H * 4)
    data[(3 * W + 4) * 4 + 3] = 255
    stroke.setPixelData(bytes(data), 0, 0, W, H)
    vec = doc.add_layer("DFIMat +", kind="vectorlayer")
    vec.add_shape(krita.Shape("dot", (1.0, 1.0, 1.0, 1.0), "<circle r='1'/>"))
    scene = document.read_scene(doc, "", "photo")
    assert scene.selection == (2, 1, 5, 6)
    assert [(s.name, s.x, s.y, s.width, s.height) for s in scene.stroke_layers] == [("DFIMat -", 4, 3, 1, 1)]
    assert scene.stroke_layers[0].alpha == b"\xff"
    assert scene.shapes[0].bbox == (1.0, 1.0, 1.0, 1.0)  # 72 dpi: points == pixels
    assert scene.active_layer_name == "photo"
    stroke.setVisible(False)  # a hidden prompt layer is switched off
    assert document.read_scene(doc, "", "photo").stroke_layers == ()


def test_mask_on_52_is_a_transparency_mask_and_undo_restores(doc):
    node = layer_of(doc, "photo")
    before, projection_before = snapshot(doc), node.projectionPixelData(0, 0, W, H)
    message = document.write_output(doc, node, ramp_alpha(), W, H, "mask")
    assert "transparency mask" in message
    masks = node.childNodes()
    assert [(m.type(), m.name()) for m in masks] == [("transparencymask", document.MASK_NAME)]
    assert masks[0].pixelData(0, 0, W, H) == ramp_alpha()
    assert node.projectionPixelData(0, 0, W, H)[3::4] == ramp_alpha()
    assert node.pixelData(0, 0, W, H) == photo_bgra()  # the layer's own pixels are untouched
    doc.undo()
    assert snapshot(doc) == before and node.projectionPixelData(0, 0, W, H) == projection_before


def test_a_second_round_replaces_the_mask_and_two_undos_restore_the_first(doc):
    node = layer_of(doc, "photo")
    document.write_output(doc, node, ramp_alpha(), W, H, "mask")
    first = node.childNodes()[0]
    document.write_output(doc, node, bytes(W * H), W, H, "mask")
    assert len(node.childNodes()) == 1 and node.childNodes()[0] is not first
    doc.undo()
    doc.undo()
    assert node.childNodes() == [first]


def test_51_without_a_window_falls_back_to_a_selection_mask(app, doc):
    app.set_version("5.1.5")
    node = layer_of(doc, "photo")
    message = document.write_output(doc, node, ramp_alpha(), W, H, "mask")
    assert "selection mask" in message
    (mask,) = node.childNodes()
    assert mask.type() == "selectionmask" and mask.selection.pixelData(0, 0, W, H) == ramp_alpha()


def test_layer_output_adds_a_cutout_above_and_selection_output_replaces_selection(doc):
    node = layer_of(doc, "photo")
    document.write_output(doc, node, ramp_alpha(), W, H, "layer")
    names = [n.name() for n in doc.rootNode().childNodes()]
    assert names == ["photo", document.CUTOUT_NAME]
    cut = layer_of(doc, document.CUTOUT_NAME).pixelData(0, 0, W, H)
    assert cut[3::4] == ramp_alpha() and cut[0::4] == photo_bgra()[0::4]
    doc.undo()
    assert [n.name() for n in doc.rootNode().childNodes()] == ["photo"]
    document.write_output(doc, node, ramp_alpha(), W, H, "selection")
    assert doc.selection().pixelData(0, 0, W, H) == ramp_alpha()


@pytest.mark.parametrize(("version", "output"), [("5.2.9", "mask"), ("5.1.5", "mask"), ("5.2.9", "layer")])
def test_a_written_node_is_present_until_undone(app, doc, version, output):
    app.set_version(version)
    node = layer_of(doc, "photo")
    _, identity = document.write_result(doc, node, ramp_alpha(), W, H, output)
    assert document.result_present(doc, identity)
    _, second = document.write_result(doc, node, ramp_alpha(), W, H, output)
    assert second != identity and document.result_present(doc, second)
    for _ in range(2 if output == "mask" else 1):  # a mask round is two steps: add the new one, remove the old
        doc.undo()
    assert not document.result_present(doc, second) and document.result_present(doc, identity)


def test_a_written_selection_is_present_until_the_selection_changes(doc):
    node = layer_of(doc, "photo")
    box = krita.Selection()
    box.select(2, 1, 4, 4, 255)
    doc.setSelection(box)
    _, identity = document.write_result(doc, node, ramp_alpha(), W, H, "selection")
    assert identity.startswith("selection:") and document.result_present(doc, identity)
    doc.setSelection(box)  # what undoing the selection change shows
    assert not document.result_present(doc, identity)
    doc.setSelection(None)
    assert not document.result_present(doc, identity)


def test_bad_results_change_nothing(doc):
    node = layer_of(doc, "photo")
    before = snapshot(doc)
    with pytest.raises(document.DocumentError, match="resized"):
        document.write_output(doc, node, bytes(6 * 4), 6, 4, "mask")
    with pytest.raises(document.DocumentError, match="alpha bytes"):
        document.write_output(doc, node, bytes(5), W, H, "mask")
    with pytest.raises(document.DocumentError, match="Unknown output"):
        document.write_output(doc, node, ramp_alpha(), W, H, "sticker")
    assert snapshot(doc) == before and doc.selection() is None


def test_person_layers_one_per_alpha(doc):
    node = layer_of(doc, "photo")
    document.add_person_layers(doc, node, [ramp_alpha(), bytes(W * H)], W, H)
    assert [n.name() for n in doc.rootNode().childNodes()] == ["photo", "DFIMat person 2", "DFIMat person 1"]


def test_without_a_view_the_top_ordinary_layer_is_the_target(app):
    d = app.add_document(krita.Document(W, H))
    d.add_layer("photo")
    d.add_layer("retouch")
    d.add_layer("DFIMat +")
    assert d.activeNode() is None
    assert document.pick_target_node(d).name() == "retouch"
