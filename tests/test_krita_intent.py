"""Prompt extraction and pixel helpers of the Krita plug-in (pure Python, no Krita)."""

from __future__ import annotations

import pytest

from tests.mock_krita.loader import submodule

intent = submodule("intent")
pixels = submodule("pixels")


def plane(width, height, painted):
    data = bytearray(width * height)
    for x, y, v in painted:
        data[y * width + x] = v
    return bytes(data)


@pytest.mark.parametrize("name, sign", [
    ("DFIMat +", True), ("dfimat+ hair", True), ("DFIMat", True), ("DFIMat -", False),
    ("DFIMat \u2212 arm", False), ("  DFIMAT - ", False), ("Paint Layer 1", None), ("DFIMatte", None),
    # The plug-in's own "Split people" layers are cut-outs, not strokes.
    ("DFIMat person 1", None), ("DFIMat hair", None),
])
def test_prompt_layer_sign(name, sign):
    assert intent.prompt_layer_sign(name) is sign


def test_text_prefers_docker_then_descriptive_layer_names():
    assert intent.text_from(" the man in red ", "woman") == "the man in red"
    assert intent.text_from("", "woman with umbrella") == "woman with umbrella"
    for default in ("Background", "Paint Layer 3", "Layer 2", "Copy of photo", "IMG_001.jpg", "DFIMat +",
                    "photo", "my holiday.jpg"):
        assert intent.text_from("", default) is None, default


def test_selection_box_is_clipped_and_exclusive():
    assert intent.box_from_selection((10, 20, 30, 40), 100, 100) == [10, 20, 40, 60]
    assert intent.box_from_selection((-5, 90, 50, 50), 100, 100) == [0, 90, 45, 100]
    assert intent.box_from_selection((99, 0, 10, 10), 100, 100) is None  # 1 px wide after clipping
    assert intent.box_from_selection(None, 100, 100) is None


def test_crop_plane_finds_tight_bounds():
    p = plane(8, 6, [(2, 1, 9), (5, 4, 200)])
    x, y, w, h, data = pixels.crop_plane(p, 8, 6)
    assert (x, y, w, h) == (2, 1, 4, 4)
    assert data[0] == 9 and data[-1] == 200 and len(data) == 16
    assert pixels.crop_plane(bytes(12), 4, 3) is None
    with pytest.raises(ValueError):
        pixels.crop_plane(bytes(5), 2, 2)


def test_stroke_layer_becomes_cropped_mask_in_canvas_coordinates():
    layer = intent.StrokeLayer("DFIMat -", 10, 20, 8, 6, plane(8, 6, [(3, 2, 255), (4, 3, 128)]))
    mask = intent.stroke_mask_from(layer)
    assert (mask.positive, mask.x, mask.y, mask.width, mask.height) == (False, 13, 22, 2, 2)
    assert mask.mask == bytes([255, 0, 0, 128])
    assert intent.stroke_mask_from(intent.StrokeLayer("DFIMat +", 0, 0, 2, 2, bytes(4))) is None
    assert intent.stroke_mask_from(intent.StrokeLayer("Sketch", 0, 0, 1, 1, b"\xff")) is None


def test_small_shape_is_a_click_large_path_a_scribble_placed_on_its_bbox():
    small = intent.VectorShape("DFIMat -", "Shape 1", (40.0, 50.0, 6.0, 6.0), "<ellipse cx='3' cy='3' rx='3' ry='3'/>")
    assert intent.shape_prompts(small, 400, 300) == ([[43.0, 53.0, False]], [])
    # Path in its own units (here scaled by a transform); the bbox says where it is in pixels.
    svg = '<path transform="scale(2)" d="M0 0 L10 0 L10 5"/>'
    path = intent.VectorShape("DFIMat +", "Path", (100.0, 100.0, 80.0, 40.0), svg)
    clicks, scribbles = intent.shape_prompts(path, 400, 300)
    assert clicks == [] and len(scribbles) == 1
    assert scribbles[0]["positive"] is True
    assert scribbles[0]["points"] == [[100.0, 100.0], [180.0, 100.0], [180.0, 140.0]]
    ignored = intent.VectorShape("Notes", "Shape", (0.0, 0.0, 50.0, 50.0), svg)
    assert intent.shape_prompts(ignored, 400, 300) == ([], [])


def test_path_parser_handles_relative_curves_and_close():
    lines = intent.path_polylines("m 10 10 c 0 10 10 10 10 0 z M 50 50 H 60 V 70")
    assert len(lines) == 2
    first, second = lines
    assert first[0] == (10.0, 10.0) and first[-1] == (10.0, 10.0)
    assert any(y > 15 for _, y in first)  # the curve bulges downwards
    assert second == [(50.0, 50.0), (60.0, 50.0), (60.0, 70.0)]
    assert intent.path_polylines("garbage") == []
    assert intent.svg_polylines("<not xml") == []


def test_transform_composition():
    m = intent.parse_transform("translate(10, 5) scale(2)")
    assert intent._apply(m, 1, 1) == (12.0, 7.0)
    r = intent.parse_transform("rotate(90)")
    x, y = intent._apply(r, 1, 0)
    assert abs(x) < 1e-9 and abs(y - 1) < 1e-9


def test_build_prompts_mixes_everything_and_refuses_nothing():
    scene = intent.Scene(
        200, 100, selection=(10, 10, 50, 80),
        stroke_layers=(intent.StrokeLayer("DFIMat +", 0, 0, 4, 4, plane(4, 4, [(1, 1, 255)])),),
        shapes=(intent.VectorShape("DFIMat -", "s", (20.0, 20.0, 2.0, 2.0)),),
        active_layer_name="Background", text="")
    prompts = intent.build_prompts(scene)
    assert prompts.box == [10, 10, 60, 90]
    assert prompts.clicks == [[21.0, 21.0, False]]
    assert len(prompts.stroke_masks) == 1 and prompts.text is None
    wire = prompts.to_wire()
    assert set(wire) == {"box", "clicks", "scribbles", "text", "stroke_masks"}
    assert wire["stroke_masks"][0]["mask"] == b"\xff"
    with pytest.raises(intent.NoPromptError, match="DFIMat \\+"):
        intent.build_prompts(intent.Scene(200, 100, active_layer_name="Paint Layer 1"))


def test_prompt_memory_sends_only_new_strokes_but_always_box_and_text():
    memory = intent.PromptMemory()
    a = intent.StrokeMask(True, 0, 0, 1, 1, b"\xff")
    b = intent.StrokeMask(False, 5, 5, 1, 1, b"\xff")
    first = intent.Prompts(box=[0, 0, 10, 10], stroke_masks=[a], clicks=[[1.0, 1.0, True]])
    memory.remember("k", memory.new_round("k", first))
    second = memory.new_round("k", intent.Prompts(box=[0, 0, 10, 10], stroke_masks=[a, b],
                                                  clicks=[[1.0, 1.0, True]], text="man"))
    assert second.box == [0, 0, 10, 10] and second.text == "man"
    assert second.stroke_masks == [b] and second.clicks == []
    memory.forget("k")
    assert memory.new_round("k", first).stroke_masks == [a]


def test_bgra_swap_and_cutout():
    assert pixels.bgra_to_rgba(bytes([1, 2, 3, 4, 5, 6, 7, 8])) == bytes([3, 2, 1, 4, 7, 6, 5, 8])
    with pytest.raises(ValueError):
        pixels.bgra_to_rgba(b"abc")
    opaque = bytes([1, 2, 3, 255, 4, 5, 6, 255])
    assert pixels.with_alpha(opaque, bytes([10, 200])) == bytes([1, 2, 3, 10, 4, 5, 6, 200])
    half = bytes([1, 2, 3, 128, 4, 5, 6, 255])
    assert pixels.with_alpha(half, bytes([255, 0])) == bytes([1, 2, 3, 128, 4, 5, 6, 0])
    assert pixels.threshold_count(bytes([0, 127, 128, 255])) == 2
