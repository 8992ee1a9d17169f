"""The Krita refinement loop without Krita (mock ``krita`` module): round messages, the matte view's state and
data, the active layer after a round, and the undo grouping's refusal outside a real Krita."""

from __future__ import annotations

import pytest

from tests.mock_krita.loader import submodule
from tests.test_krita_worker import H, W, pump_until, setup  # noqa: F401  (the shared fixture)

controller_mod = submodule("controller")
document = submodule("document")
undo = submodule("undo")
import krita  # noqa: E402  (the mock)


def test_round_report_names_the_round_the_change_the_time_and_the_prompts():
    report = controller_mod.round_report
    assert report("DFIMat Refine", "Updated transparency mask 'DFIMat mask' on 'photo'.", 0.43, "1 stroke") == \
        "DFIMat Refine: updated transparency mask 'DFIMat mask' on 'photo' in 0.4 s (1 stroke)."
    assert report("DFIMat Split People", "2 people found", 1.0) == "DFIMat Split People: 2 people found in 1.0 s."


def test_select_then_refine_say_which_round_and_what_changed(setup):  # noqa: F811
    doc, photo, client, ctl, messages = setup
    ctl.select_person()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert messages[-1][0].startswith("DFIMat Select Person: added transparency mask 'DFIMat mask' to 'photo' in ")
    assert messages[-1][0].endswith(" s (box).")
    client.alpha_value = 90
    ctl.refine()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    text, error = messages[-1]
    assert not error and text.startswith("DFIMat Refine: updated transparency mask 'DFIMat mask' on 'photo' in ")


def test_split_people_says_how_many_were_found(setup):  # noqa: F811
    doc, photo, client, ctl, messages = setup
    ctl.split_people()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert messages[-1][0].startswith("DFIMat Split People: 2 people found; added 2 person layer(s)")


def test_a_round_leaves_the_active_layer_where_it_was(setup):  # noqa: F811
    doc, photo, client, ctl, messages = setup
    stroke = doc.add_layer("DFIMat -", bytes(W * H * 4))
    doc.setActiveNode(stroke)
    ctl.select_person()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert photo.childNodes()[0].type() == "transparencymask"  # the photo was matted, from the stroke layer
    assert doc.activeNode() is stroke


def test_view_toggle_tells_its_listeners_and_only_reads_the_document(setup):  # noqa: F811
    doc, photo, client, ctl, messages = setup
    seen, results = [], []
    ctl.on_view.append(seen.append)
    ctl.on_result.append(results.append)
    doc.setSelection(None)
    with pytest.raises(document.DocumentError, match="no DFIMat result to view yet"):
        document.matte_view_data(doc, photo)
    sel = krita.Selection()
    sel.select(2, 1, 4, 4, 255)
    doc.setSelection(sel)
    ctl.select_person()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert results == [document.node_id(photo)]
    undo_depth = len(doc.undo_stack) if hasattr(doc, "undo_stack") else None
    ctl.toggle_view()
    ctl.toggle_view()
    ctl.set_view(False)  # already hidden: nobody is told twice
    assert seen == [True, False]
    assert ctl.view_target() == (doc, photo)
    bgra, alpha, width, height = document.matte_view_data(doc, photo)
    assert (width, height) == (W, H) and alpha == bytes([200]) * (W * H) and len(bgra) == W * H * 4
    if undo_depth is not None:
        assert len(doc.undo_stack) == undo_depth


def test_named_step_changes_nothing_without_a_real_krita(setup):  # noqa: F811
    doc, photo, client, ctl, messages = setup
    with undo.named_step(doc, "DFIMat Refine") as grouped:
        assert grouped is False
    assert krita.Krita.instance() is not None
