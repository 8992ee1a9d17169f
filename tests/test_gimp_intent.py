"""Prompt extraction of the GIMP plug-in from GIMP-like data (runs anywhere, no GIMP needed)."""

from __future__ import annotations

import pytest

from tests.editors import gimp_modules

it = gimp_modules.load("intent")

LAYER = it.Rect(x=100, y=50, width=400, height=300)


def alpha_with(width: int, height: int, painted: list[tuple[int, int, int, int]], value: int = 255) -> bytes:
    buf = bytearray(width * height)
    for x0, y0, x1, y1 in painted:
        for y in range(y0, y1):
            buf[y * width + x0:y * width + x1] = bytes([value]) * (x1 - x0)
    return bytes(buf)


# --- names ---


@pytest.mark.parametrize(("name", "expected"), [
    ("DFIMat +", True), ("dfimat+", True), ("DFIMat -", False), ("DFIMat \u2212", False),
    ("DFIMat positive", True), ("DFIMat neg", False), ("DFIMat bg", False), ("DFIMat fg", True),
    ("DFIMat", True), ("DFIMat notes", None), ("Layer", None), ("my dfimat +", None),
])
def test_stroke_layer_polarity(name, expected):
    assert it.stroke_layer_polarity(name) is expected


@pytest.mark.parametrize(("name", "positive"), [
    ("Path", True), ("hair", True), ("-", False), ("- sleeve", False), ("bg", False), ("BG left", False),
    ("\u2212 arm", False), ("Background left", False), ("bgm", False), ("Boy", True),
])
def test_path_polarity(name, positive):
    assert it.path_is_positive(name) is positive


@pytest.mark.parametrize(("name", "text"), [
    ("woman in the red coat", "woman in the red coat"),
    ("  the  tall man ", "the tall man"),
    ("person", "person"),
    ("Woman", "Woman"),
    ("Background", None), ("Layer", None), ("Layer #2", None), ("Pasted Layer", None),
    ("Background copy", None), ("Layer copy #1", None), ("IMG_1234.JPG", None), ("family photo.png", None),
    ("sky", None), ("DFIMat +", None), ("", None), ("a b", None), ("Background \u2013 person 2", None),
])
def test_text_from_layer_name(name, text):
    assert it.text_from_layer_name(name) == text


# --- selection ---


def test_selection_is_shifted_by_layer_offset_and_clipped():
    assert it.selection_box((150, 100, 250, 400), LAYER) == [50.0, 50.0, 150.0, 300.0]
    assert it.selection_box((0, 0, 120, 60), LAYER) == [0.0, 0.0, 20.0, 10.0]


def test_no_selection_or_select_all_means_no_box():
    assert it.selection_box(None, LAYER) is None
    assert it.selection_box((0, 0, 1000, 1000), LAYER) is None
    assert it.selection_box((100, 50, 500, 350), LAYER) is None


def test_selection_off_the_layer_is_a_clear_error():
    with pytest.raises(it.IntentError, match="does not overlap"):
        it.selection_box((0, 0, 90, 40), LAYER)


# --- paths ---


def test_single_anchor_strokes_are_clicks_and_longer_ones_scribbles():
    paths = [
        it.PathInfo("Path", (it.PathStroke(((200.0, 100.0),)),
                             it.PathStroke(((110.0, 60.0), (130.0, 80.0)),
                                           ((110.0, 60.0), (120.0, 70.0), (130.0, 80.0))))),
        it.PathInfo("- arm", (it.PathStroke(((300.0, 200.0),)),)),
    ]
    clicks, scribbles, notes = it.path_prompts(paths, LAYER)
    assert clicks == [[100.0, 50.0, True], [200.0, 150.0, False]]
    assert scribbles == [{"points": [[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]], "positive": True,
                          "width": it.PATH_SCRIBBLE_WIDTH}]
    assert notes == []


def test_path_parts_outside_the_layer_are_dropped_with_a_note():
    paths = [it.PathInfo("p", (it.PathStroke(((10.0, 10.0),)),
                               it.PathStroke(((50.0, 60.0), (150.0, 60.0)), ((50.0, 60.0), (150.0, 60.0)))))]
    clicks, scribbles, notes = it.path_prompts(paths, LAYER)
    assert clicks == []
    assert scribbles[0]["points"] == [[50.0, 10.0]]
    assert len(notes) == 2


# --- stroke layers ---


def test_stroke_mask_is_cropped_binarized_and_in_target_coordinates():
    stroke = it.StrokeLayer("DFIMat -", 7, it.Rect(0, 0, 600, 400),
                            alpha_with(600, 400, [(150, 100, 160, 105)], value=200))
    mask = it.stroke_mask(stroke, LAYER)
    assert (mask.x, mask.y, mask.width, mask.height, mask.positive) == (50, 50, 10, 5, False)
    assert mask.data == b"\xff" * 50


def test_faint_pixels_and_strokes_off_the_target_are_ignored():
    stroke = it.StrokeLayer("DFIMat +", 7, it.Rect(0, 0, 600, 400),
                            alpha_with(600, 400, [(10, 10, 20, 20)]))
    assert it.stroke_mask(stroke, LAYER) is None
    faint = it.StrokeLayer("DFIMat +", 8, it.Rect(100, 50, 400, 300),
                           alpha_with(400, 300, [(0, 0, 50, 50)], value=it.STROKE_ALPHA_THRESHOLD - 1))
    assert it.stroke_mask(faint, LAYER) is None


def test_stroke_layer_with_its_own_offset_partly_over_the_target():
    stroke = it.StrokeLayer("DFIMat +", 3, it.Rect(480, 330, 40, 40), alpha_with(40, 40, [(0, 0, 40, 40)]))
    mask = it.stroke_mask(stroke, LAYER)
    assert (mask.x, mask.y, mask.width, mask.height) == (380, 280, 20, 20)


def test_stroke_layer_size_mismatch_is_rejected():
    with pytest.raises(ValueError, match="alpha bytes"):
        it.StrokeLayer("DFIMat +", 1, it.Rect(0, 0, 10, 10), b"\0" * 99)


# --- whole intent ---


def test_build_intent_mixes_every_prompt_kind():
    stroke = it.StrokeLayer("DFIMat +", 5, LAYER, alpha_with(400, 300, [(5, 5, 8, 8)]))
    intent = it.build_intent(LAYER, (150, 100, 250, 300), [it.PathInfo("p", (it.PathStroke(((120.0, 70.0),)),))],
                             [stroke], dialog_text=None, layer_name="woman with umbrella")
    prompts = intent.to_prompts()
    assert prompts["box"] == [50.0, 50.0, 150.0, 250.0]
    assert prompts["clicks"] == [[20.0, 20.0, True]]
    assert prompts["stroke_masks"][0]["x"] == 5 and prompts["stroke_masks"][0]["mask"] == b"\xff" * 9
    assert prompts["text"] == "woman with umbrella"


def test_dialog_text_wins_over_layer_name_and_empty_intent_is_refused():
    assert it.build_intent(LAYER, dialog_text=" the  child ", layer_name="woman").text == "the child"
    empty = it.build_intent(LAYER, None, layer_name="Background")
    with pytest.raises(it.IntentError, match="DFIMat \\+"):
        it.require_prompt(empty)


# --- rounds ---


def _intent_with_strokes(rects):
    stroke = it.StrokeLayer("DFIMat -", 9, LAYER, alpha_with(400, 300, rects))
    return it.build_intent(LAYER, (150, 100, 250, 300), stroke_layers=[stroke])


def test_first_round_and_new_session_send_everything():
    intent = _intent_with_strokes([(0, 0, 4, 4)])
    prompts, state = it.next_round(intent, None, "s1")
    assert prompts["box"] and len(prompts["stroke_masks"]) == 1
    prompts2, _ = it.next_round(intent, state, "s2")
    assert prompts2 == intent.to_prompts()


def test_second_round_sends_only_freshly_painted_pixels():
    first = _intent_with_strokes([(0, 0, 4, 4)])
    _, state = it.next_round(first, None, "s1")
    state = it.RoundState.from_bytes(state.to_bytes())
    second = _intent_with_strokes([(0, 0, 4, 4), (100, 200, 103, 202)])
    prompts, state2 = it.next_round(second, state, "s1")
    assert prompts["box"] is None and prompts["text"] is None
    (mask,) = prompts["stroke_masks"]
    assert (mask["x"], mask["y"], mask["width"], mask["height"]) == (100, 200, 3, 2)
    assert mask["mask"] == b"\xff" * 6 and mask["positive"] is False
    again, _ = it.next_round(second, state2, "s1")
    assert it.round_is_empty(again)


def test_overlapping_new_stroke_sends_only_the_difference():
    _, state = it.next_round(_intent_with_strokes([(10, 10, 20, 20)]), None, "s")
    prompts, _ = it.next_round(_intent_with_strokes([(15, 10, 25, 20)]), state, "s")
    (mask,) = prompts["stroke_masks"]
    assert (mask["x"], mask["y"], mask["width"], mask["height"]) == (20, 10, 5, 10)


def test_changed_box_and_new_clicks_are_sent_old_ones_are_not():
    path = it.PathInfo("p", (it.PathStroke(((120.0, 70.0),)),))
    first = it.build_intent(LAYER, (150, 100, 250, 300), [path])
    _, state = it.next_round(first, None, "s")
    path2 = it.PathInfo("p", (it.PathStroke(((120.0, 70.0),)), it.PathStroke(((130.0, 90.0),))))
    second = it.build_intent(LAYER, (150, 100, 260, 300), [path2])
    prompts, _ = it.next_round(second, state, "s")
    assert prompts["box"] == [50.0, 50.0, 160.0, 250.0]
    assert prompts["clicks"] == [[30.0, 40.0, True]]


def test_damaged_or_foreign_state_is_ignored():
    assert it.RoundState.from_bytes(b"not json") is None
    assert it.RoundState.from_bytes(b'{"v": 99, "session": "x"}') is None
    assert it.RoundState.from_bytes(b"[1, 2]") is None
    assert it.RoundState.from_bytes(None) is None


def test_crop_mask_of_a_large_layer_is_fast_enough():
    import time

    width, height = 6000, 4000
    data = alpha_with(width, height, [(5000, 3000, 5010, 3020)])
    start = time.perf_counter()
    x, y, w, h, cropped = it.crop_mask(data, width, height)
    elapsed = time.perf_counter() - start
    assert (x, y, w, h) == (5000, 3000, 10, 20) and len(cropped) == 200
    assert elapsed < 2.0, f"cropping a 24 MP mask took {elapsed:.2f} s"


def test_sub_rect_cuts_a_window_and_refuses_one_outside():
    data = bytes(range(20))  # 5 wide, 4 high
    assert it.sub_rect(data, 5, 1, 2, 3, 2) == bytes([11, 12, 13, 16, 17, 18])
    with pytest.raises(ValueError, match="outside"):
        it.sub_rect(data, 5, 3, 0, 3, 1)


def test_dropping_the_selection_to_paint_keeps_the_box_of_the_session():
    first = it.build_intent(LAYER, (150, 100, 250, 300))
    _, state = it.next_round(first, None, "s")
    stroke = it.StrokeLayer("DFIMat -", 9, LAYER, alpha_with(400, 300, [(0, 0, 4, 4)]))
    painted = it.build_intent(LAYER, None, stroke_layers=[stroke])
    prompts, state = it.next_round(painted, state, "s")
    assert prompts["box"] is None and len(prompts["stroke_masks"]) == 1
    back = it.build_intent(LAYER, (150, 100, 250, 300), stroke_layers=[stroke])
    prompts, _ = it.next_round(back, state, "s")
    assert it.round_is_empty(prompts)


# --- selection output: the selection is the matte ---

MATTE_BOUNDS = (160, 110, 240, 290)  # canvas; the matte is smaller than the rectangle the user drew
MATTE = alpha_with(80, 180, [(10, 0, 70, 180)], value=200)


def _after_selection_output(box_bounds=(150, 100, 250, 300)):
    first = it.build_intent(LAYER, box_bounds)
    _, state = it.next_round(first, None, "s")
    state.selection = it.selection_print(MATTE_BOUNDS, MATTE)  # what select_person stores after writing it
    return it.RoundState.from_bytes(state.to_bytes())


def _never_read():
    raise AssertionError("the selection pixels were read although the bounds differ")


def test_selection_print_matches_only_the_very_same_selection():
    state = _after_selection_output()
    assert it.is_own_selection(state, MATTE_BOUNDS, lambda: MATTE)
    assert not it.is_own_selection(state, MATTE_BOUNDS, lambda: b"\xff" * len(MATTE))
    assert not it.is_own_selection(state, (160, 110, 240, 291), _never_read)
    assert not it.is_own_selection(state, None, _never_read)
    assert not it.is_own_selection(None, MATTE_BOUNDS, _never_read)
    assert it.selection_print(None, b"") is None


def test_rerun_on_the_written_selection_is_not_a_new_box():
    state = _after_selection_output()
    intent = it.build_intent(LAYER, MATTE_BOUNDS, state=state, read_selection=lambda: MATTE)
    assert intent.selection_is_matte and intent.box == [50.0, 50.0, 150.0, 250.0]
    prompts, new_state = it.next_round(intent, state, "s")
    # Nothing new: the caller restarts the session from the whole intent, i.e. from the user's rectangle.
    assert it.round_is_empty(prompts)
    assert intent.to_prompts()["box"] == [50.0, 50.0, 150.0, 250.0]
    # A mask output leaves the matte selection in place, so it must still be recognised next time.
    assert new_state.selection == state.selection


def test_strokes_added_on_the_written_selection_refine_without_a_box():
    state = _after_selection_output()
    stroke = it.StrokeLayer("DFIMat -", 9, LAYER, alpha_with(400, 300, [(70, 100, 80, 104)]))
    intent = it.build_intent(LAYER, MATTE_BOUNDS, stroke_layers=[stroke], state=state,
                             read_selection=lambda: MATTE)
    prompts, _ = it.next_round(intent, state, "s")
    assert prompts["box"] is None and len(prompts["stroke_masks"]) == 1


def test_a_new_selection_is_a_box_again():
    state = _after_selection_output()
    # Same bounds as the matte but other pixels: a rectangle the user drew, not the matte.
    drawn = it.build_intent(LAYER, MATTE_BOUNDS, state=state, read_selection=lambda: b"\xff" * len(MATTE))
    assert not drawn.selection_is_matte and drawn.box == [60.0, 60.0, 140.0, 240.0]
    prompts, new_state = it.next_round(drawn, state, "s")
    assert prompts["box"] == [60.0, 60.0, 140.0, 240.0] and new_state.selection is None
    moved = it.build_intent(LAYER, (170, 110, 240, 290), state=state, read_selection=_never_read)
    assert moved.box == [70.0, 60.0, 140.0, 240.0]


def test_state_without_a_selection_print_still_loads():
    raw = b'{"v": 1, "session": "s", "box": [1, 2, 3, 4]}'
    state = it.RoundState.from_bytes(raw)
    assert state.session == "s" and state.selection is None


# --- undo: the last run's result is gone ---

WRITTEN = alpha_with(400, 300, [(50, 50, 150, 250)], value=230)


def _never_read_mask():
    raise AssertionError("the mask pixels were read although its size already tells")


def _after_mask_output():
    """Round 1 (box) and round 2 (a "DFIMat -" stroke) sent; round 2 wrote WRITTEN as the layer mask."""
    _, state = it.next_round(_intent_with_strokes([]), None, "s")
    _, state = it.next_round(_intent_with_strokes([(0, 0, 4, 4)]), state, "s")
    state.mask = it.mask_print(400, 300, WRITTEN)  # what select_person stores after writing the mask
    return it.RoundState.from_bytes(state.to_bytes())


def test_mask_still_in_place_continues_the_session():
    state = _after_mask_output()
    intent = _intent_with_strokes([(0, 0, 4, 4), (100, 200, 103, 202)])
    assert not it.last_result_changed(state, intent, (150, 100, 250, 300), (400, 300), lambda: WRITTEN)
    prompts, _, restart = it.plan_round(intent, state, "s", False)
    assert not restart and prompts["box"] is None
    (mask,) = prompts["stroke_masks"]
    assert (mask["x"], mask["y"], mask["width"], mask["height"]) == (100, 200, 3, 2)


@pytest.mark.parametrize(("size", "read"), [
    (None, _never_read_mask),  # undone (the mask was added by the run) or deleted
    ((400, 301), _never_read_mask),  # another size
    ((400, 300), lambda: alpha_with(400, 300, [(50, 50, 150, 250)], value=229)),  # undone to the old mask, edited
])
def test_undone_or_edited_mask_starts_over_with_the_full_intent(size, read):
    state = _after_mask_output()
    # The user took round 2 back (Ctrl+Z, and the stroke away) and paints a new stroke elsewhere.
    intent = _intent_with_strokes([(100, 200, 103, 202)])
    changed = it.last_result_changed(state, intent, (150, 100, 250, 300), size, read)
    assert changed
    prompts, new_state, restart = it.plan_round(intent, state, "s", changed)
    assert restart and prompts == intent.to_prompts() and prompts["box"] == [50.0, 50.0, 150.0, 250.0]
    # The new state is exactly what was sent: the undone stroke is not remembered as already sent.
    assert set(new_state.strokes) == {"9"} and it.new_pixels(intent.stroke_masks[0], new_state.strokes["9"]) is None
    # Painted again later, the undone stroke is new to the restarted session and is sent.
    prompts, _, _ = it.plan_round(_intent_with_strokes([(0, 0, 4, 4), (100, 200, 103, 202)]), new_state, "s")
    (mask,) = prompts["stroke_masks"]
    assert (mask["x"], mask["y"], mask["width"], mask["height"]) == (0, 0, 4, 4)


def test_a_new_session_needs_no_reset_and_no_state_means_nothing_changed():
    state = _after_mask_output()
    intent = _intent_with_strokes([(100, 200, 103, 202)])
    prompts, _, restart = it.plan_round(intent, state, "other", True)
    assert not restart and prompts == intent.to_prompts()
    assert not it.last_result_changed(None, intent, None, None, _never_read_mask)
    prompts, _, restart = it.plan_round(intent, None, "s", False)
    assert not restart and prompts == intent.to_prompts()


def test_nothing_new_still_starts_over():
    state = _after_mask_output()
    intent = _intent_with_strokes([(0, 0, 4, 4)])
    assert not it.last_result_changed(state, intent, (150, 100, 250, 300), (400, 300), lambda: WRITTEN)
    prompts, _, restart = it.plan_round(intent, state, "s", False)
    assert restart and prompts == intent.to_prompts()


def test_undone_selection_output_starts_over_but_a_dropped_selection_does_not():
    state = _after_selection_output()
    # Ctrl+Z brings back the rectangle the user drew: it is not the written matte.
    undone = it.build_intent(LAYER, (150, 100, 250, 300), state=state, read_selection=lambda: b"\xff" * 20000)
    assert it.last_result_changed(state, undone, (150, 100, 250, 300), None, _never_read_mask)
    prompts, new_state, restart = it.plan_round(undone, state, "s", True)
    assert restart and prompts["box"] == [50.0, 50.0, 150.0, 250.0] and new_state.selection is None
    # Still the matte: refine on it.
    kept = it.build_intent(LAYER, MATTE_BOUNDS, state=state, read_selection=lambda: MATTE)
    assert not it.last_result_changed(state, kept, MATTE_BOUNDS, None, _never_read_mask)
    # Select → None to paint outside the matte is the documented way to refine, not an undo.
    dropped = it.build_intent(LAYER, None, stroke_layers=[it.StrokeLayer("DFIMat -", 9, LAYER,
                                                                         alpha_with(400, 300, [(0, 0, 4, 4)]))])
    assert not it.last_result_changed(state, dropped, None, None, _never_read_mask)


def test_state_mask_print_round_trips_and_older_states_have_none():
    state = _after_mask_output()
    assert state.mask == [400, 300, it.mask_print(400, 300, WRITTEN)[2]]
    assert it.RoundState.from_bytes(b'{"v": 1, "session": "s", "mask": "junk"}').mask is None


# --- batch ---


def test_batch_prompts_shift_box_and_paths_onto_each_layer():
    paths = [it.PathInfo("Path", (it.PathStroke(((200.0, 100.0),)),)),
             it.PathInfo("bg", (it.PathStroke(((110.0, 60.0), (130.0, 60.0)),
                                              ((110.0, 60.0), (120.0, 60.0), (130.0, 60.0))),))]
    other = it.Rect(x=0, y=0, width=600, height=400)
    for rect, dx, dy in ((LAYER, 100, 50), (other, 0, 0)):
        prompts, notes = it.batch_prompts(rect, (150, 100, 250, 300), paths, "  the  man ")
        assert prompts["box"] == [150.0 - dx, 100.0 - dy, 250.0 - dx, 300.0 - dy]
        assert prompts["clicks"] == [[200.0 - dx, 100.0 - dy, True]]
        assert prompts["scribbles"][0]["positive"] is False
        assert prompts["scribbles"][0]["points"][0] == [110.0 - dx, 60.0 - dy]
        assert prompts["text"] == "the man" and "stroke_masks" not in prompts and notes == []


def test_batch_paths_alone_are_a_prompt_and_parts_off_a_layer_are_noted():
    small = it.Rect(x=300, y=0, width=100, height=100)
    paths = [it.PathInfo("Path", (it.PathStroke(((350.0, 50.0),)), it.PathStroke(((10.0, 10.0),))))]
    prompts, notes = it.batch_prompts(small, None, paths, "")
    assert prompts["box"] is None and prompts["clicks"] == [[50.0, 50.0, True]] and len(notes) == 1
    with pytest.raises(it.IntentError, match="Batch masks need one prompt"):
        it.batch_prompts(small, None, [], "")


def test_batch_says_when_stroke_layers_are_not_used():
    assert it.batch_stroke_note(["Background", "copy A"]) is None
    note = it.batch_stroke_note(["Background", "DFIMat -"])
    assert note and "not used" in note and "DFIMat Select Person" in note


# --- which layer a run is for ---


def _stack(*layers):
    return [it.LayerInfo(i, name, **kw) for i, (name, kw) in enumerate(layers, start=1)]


def test_an_ordinary_selected_layer_is_the_target():
    layers = _stack(("DFIMat -", {}), ("photo", {}), ("other", {}))
    assert it.pick_target(layers, [3]) == 3
    assert it.pick_target(layers, [1, 2]) == 2  # a stroke layer and the photo selected: the photo


def test_a_stroke_layer_continues_the_layer_the_last_run_masked():
    layers = _stack(("DFIMat -", {}), ("sky", {}), ("photo", {"has_session": True}))
    assert it.pick_target(layers, [1], last_target=3) == 3
    # Without the image's note, the one layer with a DFIMat session.
    assert it.pick_target(layers, [1]) == 3


def test_a_stroke_layer_without_a_session_mattes_the_visible_layer_under_it():
    layers = _stack(("top", {}), ("DFIMat +", {}), ("hidden", {"visible": False}), ("group", {"group": True}),
                    ("photo", {}), ("background", {}))
    assert it.pick_target(layers, [2]) == 5


def test_a_channel_uses_the_session_then_the_layer_under_the_strokes_then_the_only_layer():
    assert it.pick_target(_stack(("a", {}), ("b", {"has_session": True})), [None]) == 2
    assert it.pick_target(_stack(("DFIMat -", {}), ("a", {}), ("b", {})), [None]) == 2
    assert it.pick_target(_stack(("only", {}), ("off", {"visible": False})), [None]) == 1
    # A stale note (the layer was deleted) is ignored.
    assert it.pick_target(_stack(("only", {})), [None], last_target=99) == 1


def test_no_photo_layer_to_tell_apart_is_an_error_that_says_which():
    with pytest.raises(it.IntentError, match=r'channel is selected.*2 visible layers \("a", "b"\)'):
        it.pick_target(_stack(("a", {}), ("b", {})), [None])
    with pytest.raises(it.IntentError, match=r'no layer is selected.*2 visible layers'):
        it.pick_target(_stack(("a", {}), ("b", {})), [])
    with pytest.raises(it.IntentError, match=r'stroke layer "DFIMat -" is selected.*no visible ordinary layer'):
        it.pick_target(_stack(("DFIMat -", {}), ("photo", {"visible": False})), [1])
    with pytest.raises(it.IntentError, match=r'"DFIMat \+".*no visible layer lies under the strokes.*"top", "mid"'):
        it.pick_target(_stack(("top", {}), ("mid", {}), ("DFIMat +", {})), [3])


# --- what a round did ---


def test_round_title_and_report():
    state = it.RoundState(session="s1")
    assert it.round_title(None, "s1", False) == "DFIMat Select Person"
    assert it.round_title(state, "s1", False) == "DFIMat Refine"
    assert it.round_title(state, "s1", True) == "DFIMat Select Person"  # started over
    assert it.round_title(state, "s2", False) == "DFIMat Select Person"  # another session
    assert it.round_report("DFIMat Refine", "mask updated", 0.84) == "DFIMat Refine: mask updated in 0.8 s"
    prompts = {"box": None, "clicks": [[1, 2, True]], "scribbles": [], "text": None,
               "stroke_masks": [{}, {}]}
    assert it.round_report("DFIMat Refine", "mask updated", 1.0, prompts) == \
        "DFIMat Refine: mask updated in 1.0 s (1 click, 2 painted strokes)"
    assert it.describe_prompts({}) == "nothing new"


# --- the matte view ---


def test_view_plan_masks_the_photo_or_the_inverted_colour_layer():
    matte = bytes([0, 128, 255])
    assert it.view_plan("solid", matte) == ("photo", matte)
    assert it.view_plan("overlay", matte) == ("colour", bytes([255, 127, 0]))
    with pytest.raises(ValueError, match="unknown view mode"):
        it.view_plan("neon", matte)


def test_srgb_byte_encodes_linear_light():
    assert [it.srgb_byte(v) for v in (0.0, 1.0, 0.21586, -1, 2)] == [0, 255, 128, 0, 255]
