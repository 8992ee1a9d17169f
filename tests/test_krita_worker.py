"""The Krita plug-in's async path: backend calls on the worker thread, document changes only in ``pump()``.

The stand-in client below records calls and can be held mid-request, to show that Krita's GUI thread (here: the
test thread) never waits for the backend and that a cancelled or failed request leaves the document alone.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from tests.mock_krita.loader import submodule

controller_mod = submodule("controller")
worker_mod = submodule("worker")
import krita  # noqa: E402  (the mock)

W, H = 10, 6


class BackendNotRunning(Exception):
    """Same class name as dfimat_client's: the plug-in recognises errors by kind."""


class RecordingClient:
    """Speaks ``dfimat_client.Client``'s non-blocking API (``submit`` -> call with done/result/cancel)."""

    def __init__(self, alpha_value=200):
        self.sid = "sid-1"  # what open_image answers; another id = the backend started a new session
        self.calls = []
        self.threads = set()
        self.gate = threading.Event()
        self.gate.set()
        self.alpha_value = alpha_value
        self.fail_with = None
        self.cancelled = []

    def submit(self, method, *args, progress=None, **kwargs):
        self.threads.add(threading.get_ident())
        self.calls.append((method, *args, *kwargs.values()))
        return RecordingCall(self, method, args)


class RecordingCall:
    def __init__(self, client, method, args):
        self.client, self.method, self.args = client, method, args

    def done(self):
        return self.method != "predict" or self.client.gate.is_set()

    def cancel(self):
        self.client.cancelled.append(self.method)

    def result(self):
        if self.method == "open_image":
            return self.client.sid
        if self.method == "predict":
            if self.client.fail_with:
                raise self.client.fail_with
            return bytes([self.client.alpha_value]) * (W * H), W, H
        if self.method == "batch":
            masks = [{"alpha": bytes([v]) * (W * H), "width": W, "height": H, "box": [0, 0, W, H]} for v in (40, 80)]
            return SimpleNamespace(items=[{"masks": masks, "error": None}], cancelled=False)
        return None


def pump_until(worker, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.pump()
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def setup():
    krita.Krita.reset()
    app = krita.Krita.instance()
    doc = app.add_document(krita.Document(W, H))
    photo = doc.add_layer("photo", bytes([10, 20, 30, 255]) * (W * H))
    doc.setActiveNode(photo)
    sel = krita.Selection()
    sel.select(2, 1, 4, 4, 255)
    doc.setSelection(sel)
    client = RecordingClient()
    worker = worker_mod.Worker(lambda: client)
    ctl = controller_mod.Controller(worker)
    messages = []
    ctl.on_status.append(lambda text, error: messages.append((text, error)))
    yield doc, photo, client, ctl, messages
    worker.shutdown()
    krita.Krita.reset()


def test_select_runs_off_the_gui_thread_and_writes_only_when_pumped(setup):
    doc, photo, client, ctl, messages = setup
    client.gate.clear()
    started = time.monotonic()
    job = ctl.select_person()
    assert job is not None and time.monotonic() - started < 0.5  # the GUI thread did not wait
    assert pump_until(ctl.worker, lambda: any(c[0] == "predict" for c in client.calls))
    assert photo.childNodes() == []  # nothing written while the backend works
    client.gate.set()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    (mask,) = photo.childNodes()
    assert mask.type() == "transparencymask" and mask.pixelData(0, 0, W, H) == bytes([200]) * (W * H)
    assert threading.get_ident() not in client.threads
    opened = client.calls[0]
    assert (opened[0], len(opened[1]), *opened[2:5]) == ("open_image", W * H * 4, W, H, 4)
    assert opened[1][:4] == bytes([30, 20, 10, 255])  # BGRA from Krita, RGBA to the backend
    assert opened[5].startswith("krita:")
    prompts = next(c for c in client.calls if c[0] == "predict")[2]
    assert prompts["box"] == [2, 1, 6, 5]
    assert messages[-1][1] is False


def test_cancel_drops_the_result_and_changes_nothing(setup):
    doc, photo, client, ctl, messages = setup
    client.gate.clear()
    ctl.select_person()
    assert pump_until(ctl.worker, lambda: any(c[0] == "predict" for c in client.calls))
    ctl.cancel()
    client.gate.set()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert photo.childNodes() == []
    assert "Cancelled" in messages[-1][0] and messages[-1][1] is True
    assert client.cancelled == ["predict"]  # the backend was asked to stop too


def test_backend_errors_are_explained_and_change_nothing(setup):
    doc, photo, client, ctl, messages = setup
    client.fail_with = BackendNotRunning("no answer on tcp://127.0.0.1:1")
    ctl.select_person()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert photo.childNodes() == [] and doc.selection() is not None
    text, error = messages[-1]
    assert error and "not running" in text and "install.py" in text and "Nothing was changed" in text


def test_no_prompt_is_reported_before_any_backend_call(setup):
    doc, photo, client, ctl, messages = setup
    doc.setSelection(None)
    assert ctl.select_person() is None
    assert client.calls == [] and "DFIMat +" in messages[-1][0]


def test_refine_continues_the_session_with_only_the_new_stroke(setup):
    doc, photo, client, ctl, messages = setup
    ctl.select_person()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    minus = doc.add_layer("DFIMat -")
    data = bytearray(W * H * 4)
    data[(2 * W + 3) * 4 + 3] = 255
    minus.setPixelData(bytes(data), 0, 0, W, H)
    doc.setActiveNode(minus)  # the user is painting on the stroke layer when pressing Refine
    client.alpha_value = 90
    ctl.refine()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    resets = [c for c in client.calls if c[0] == "reset"]
    assert len(resets) == 1  # only the first, fresh selection resets the session
    predicts = [c[2] for c in client.calls if c[0] == "predict"]
    assert predicts[0]["stroke_masks"] == []
    assert [(s["positive"], s["x"], s["y"]) for s in predicts[1]["stroke_masks"]] == [(False, 3, 2)]
    (mask,) = photo.childNodes()
    assert mask.pixelData(0, 0, W, H) == bytes([90]) * (W * H)
    ctl.refine()  # nothing new: the stroke is not sent twice
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert [c[2] for c in client.calls if c[0] == "predict"][2]["stroke_masks"] == []


def _paint_minus_stroke(doc, x=3, y=2):
    """A one-pixel stroke on a new "DFIMat -" layer, the layer active (the user paints, then presses Refine)."""
    minus = doc.add_layer("DFIMat -")
    data = bytearray(W * H * 4)
    data[(y * W + x) * 4 + 3] = 255
    minus.setPixelData(bytes(data), 0, 0, W, H)
    doc.setActiveNode(minus)
    return minus


def _run(ctl, command):
    assert command() is not None
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)


def test_refine_after_the_mask_was_undone_starts_over_with_all_prompts(setup):
    doc, photo, client, ctl, messages = setup
    _run(ctl, ctl.select_person)
    doc.undo()  # Edit > Undo takes the added mask away
    assert photo.childNodes() == []
    _paint_minus_stroke(doc)
    _run(ctl, ctl.refine)
    assert [c[0] for c in client.calls] == ["open_image", "reset", "predict"] * 2
    last = [c[2] for c in client.calls if c[0] == "predict"][-1]
    assert last["box"] == [2, 1, 6, 5] and [(s["x"], s["y"]) for s in last["stroke_masks"]] == [(3, 2)]
    assert len(photo.childNodes()) == 1 and "started over" in messages[-1][0] and messages[-1][1] is False
    _run(ctl, ctl.refine)  # the new result is there again: back to sending only what is new
    assert [c[0] for c in client.calls][-2:] == ["open_image", "predict"]
    assert client.calls[-1][2]["stroke_masks"] == []


def test_undoing_a_refine_and_its_stroke_keeps_the_stroke_out_of_the_next_refine(setup):
    doc, photo, client, ctl, messages = setup
    _run(ctl, ctl.select_person)
    minus = _paint_minus_stroke(doc)
    _run(ctl, ctl.refine)
    doc.undo()  # the refinement removed the Select mask ...
    doc.undo()  # ... after adding its own: two steps bring the Select result back
    (mask,) = photo.childNodes()
    assert mask.pixelData(0, 0, W, H) == bytes([200]) * (W * H)
    minus.setPixelData(bytes(W * H * 4), 0, 0, W, H)  # and the stroke is undone too
    client.alpha_value = 120
    _run(ctl, ctl.refine)
    assert [c[0] for c in client.calls].count("reset") == 2
    last = client.calls[-1][2]
    assert last["box"] == [2, 1, 6, 5] and last["stroke_masks"] == []
    (mask,) = photo.childNodes()
    assert mask.pixelData(0, 0, W, H) == bytes([120]) * (W * H)


@pytest.mark.parametrize("output", ["selection", "layer"])
def test_refine_starts_over_when_a_selection_or_layer_result_is_undone(setup, output):
    doc, photo, client, ctl, messages = setup
    ctl.settings.output = output
    before = doc.selection()
    _run(ctl, ctl.select_person)
    _run(ctl, ctl.refine)  # the result is still there: the session continues
    assert [c[0] for c in client.calls].count("reset") == 1
    if output == "selection":
        doc.setSelection(before)  # what undoing both selection changes shows
    else:
        doc.undo()
        doc.undo()
        assert [n.name() for n in doc.rootNode().childNodes()] == ["photo"]
    _run(ctl, ctl.refine)
    assert [c[0] for c in client.calls].count("reset") == 2 and "started over" in messages[-1][0]


def test_refine_after_a_cancelled_run_starts_over(setup):
    doc, photo, client, ctl, messages = setup
    _run(ctl, ctl.select_person)
    _paint_minus_stroke(doc)
    client.gate.clear()
    ctl.refine()
    assert pump_until(ctl.worker, lambda: any(c[0] == "predict" for c in client.calls[3:]))
    ctl.cancel()  # the backend may already have added the round to its history
    client.gate.set()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    _run(ctl, ctl.refine)
    assert [c[0] for c in client.calls][-3:] == ["open_image", "reset", "predict"]
    assert [(s["x"], s["y"]) for s in client.calls[-1][2]["stroke_masks"]] == [(3, 2)]


def test_busy_worker_refuses_a_second_run_and_layer_deleted_meanwhile_is_reported(setup):
    doc, photo, client, ctl, messages = setup
    client.gate.clear()
    ctl.select_person()
    assert ctl.select_person() is None and "still working" in messages[-1][0]
    photo.remove()
    client.gate.set()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert "deleted" in messages[-1][0] and messages[-1][1] is True


def test_worker_progress_and_errors_arrive_on_the_pumping_thread():
    seen = []
    worker = worker_mod.Worker(lambda: object())

    def job(client, j):
        j.progress(0.5, "half")
        raise ValueError("boom")

    worker.submit(job, lambda r: seen.append(("done", r)), lambda e: seen.append(("error", str(e))),
                  lambda f, t: seen.append(("progress", f, t, threading.get_ident())))
    assert pump_until(worker, lambda: not worker.busy)
    assert seen[0] == ("progress", 0.5, "half", threading.get_ident())
    assert seen[1] == ("error", "boom")
    worker.shutdown()


def test_client_factory_failure_is_an_error_not_a_crash():
    errors = []
    worker = worker_mod.Worker(lambda: (_ for _ in ()).throw(ImportError("no dfimat_client")))
    worker.submit(lambda c, j: None, lambda r: None, errors.append)
    assert pump_until(worker, lambda: not worker.busy)
    assert isinstance(errors[0], ImportError)
    assert "Reinstall" in controller_mod.describe_error(errors[0])
    worker.shutdown()


def test_split_people_adds_one_layer_per_person_from_an_every_person_batch(setup):
    doc, photo, client, ctl, messages = setup
    ctl.split_people()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    (batch,) = [c for c in client.calls if c[0] == "batch"]
    (item,) = batch[1]
    assert item["every_person"] is True and (item["width"], item["height"], item["channels"]) == (W, H, 4)
    layers = {n.name(): n for n in doc.rootNode().childNodes()}
    assert set(layers) == {"photo", "DFIMat person 1", "DFIMat person 2"}
    assert layers["DFIMat person 2"].pixelData(0, 0, W, H)[3::4] == bytes([80]) * (W * H)
    assert "2 person layer(s)" in messages[-1][0]


def test_masks_for_selected_layers_uses_one_prompt_for_each_layer(setup):
    doc, photo, client, ctl, messages = setup
    ctl.masks_for_selected_layers()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert [c[0] for c in client.calls] == ["open_image", "reset", "predict"]
    assert [m.type() for m in photo.childNodes()] == ["transparencymask"]


def _two_selected_layers(doc):
    """A second layer, both selected in the Layers docker of a window showing ``doc``."""
    other = doc.add_layer("other", bytes([1, 2, 3, 255]) * (W * H))
    view = krita.Krita.instance().openWindow().addView(doc)
    view.select_nodes([doc.rootNode().childNodes()[0], other])
    return other


def test_masks_for_two_selected_layers_gives_each_its_own_mask(setup):
    doc, photo, client, ctl, messages = setup
    other = _two_selected_layers(doc)
    ctl.masks_for_selected_layers()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert [c[0] for c in client.calls] == ["open_image", "reset", "predict"] * 2
    # Each layer's own pixels go to the backend, each under its own session key.
    opened = [c for c in client.calls if c[0] == "open_image"]
    assert [o[1][:4] for o in opened] == [bytes([30, 20, 10, 255]), bytes([3, 2, 1, 255])]
    assert len({o[5] for o in opened}) == 2
    for layer in (photo, other):
        (mask,) = layer.childNodes()
        assert mask.type() == "transparencymask" and mask.pixelData(0, 0, W, H) == bytes([200]) * (W * H)
    assert messages[-1][1] is False and "'photo'" in messages[-1][0] and "'other'" in messages[-1][0]


@pytest.mark.parametrize("deleted", [0, 1])
def test_masks_for_selected_layers_writes_nothing_when_one_layer_is_deleted_meanwhile(setup, deleted):
    doc, photo, client, ctl, messages = setup
    other = _two_selected_layers(doc)
    client.gate.clear()
    ctl.masks_for_selected_layers()
    gone, kept = [(photo, other), (other, photo)][deleted]
    gone.remove()  # the user deletes a layer while the backend works
    client.gate.set()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert photo.childNodes() == [] and other.childNodes() == [] and kept.parentNode() is doc.rootNode()
    text, error = messages[-1]
    assert error and f"'{gone.name()}' was deleted" in text and text.endswith(controller_mod.NOTHING_CHANGED)


def test_masks_for_selected_layers_writes_nothing_when_one_result_is_unusable(setup):
    doc, photo, client, ctl, messages = setup
    other = _two_selected_layers(doc)
    results = iter([(bytes([200]) * (W * H), W, H), (bytes([200]) * (W * H - 1), W, H)])
    client.submit = _answer_predict_with(client.submit, results)
    ctl.masks_for_selected_layers()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert photo.childNodes() == [] and other.childNodes() == []
    assert messages[-1][1] is True and "alpha bytes" in messages[-1][0]


def test_a_krita_failure_after_the_first_batch_write_does_not_claim_nothing_changed(setup, monkeypatch):
    doc, photo, client, ctl, messages = setup
    other = _two_selected_layers(doc)
    document = submodule("document")
    write_output = document.write_output

    def failing_on_other(doc_, node, *args):
        if node is other:
            raise RuntimeError("Krita refused")
        return write_output(doc_, node, *args)

    monkeypatch.setattr(document, "write_output", failing_on_other)
    ctl.masks_for_selected_layers()
    assert pump_until(ctl.worker, lambda: not ctl.worker.busy)
    assert len(photo.childNodes()) == 1 and other.childNodes() == []
    text, error = messages[-1]
    assert error and "1 of 2" in text and "Undo" in text and controller_mod.NOTHING_CHANGED not in text


def _answer_predict_with(submit, results):
    def answering(method, *args, **kwargs):
        call = submit(method, *args, **kwargs)
        if method == "predict":
            value = next(results)
            call.result = lambda: value
        return call
    return answering


def test_every_client_error_kind_gets_its_own_advice():
    from dfimat_client import AuthError, BackendError, BackendNotRunning, ConfigError, ProtocolVersionError

    advice = {
        BackendNotRunning("nothing at ipc:///x"): "not running",
        ProtocolVersionError("server speaks 2"): "protocol version",
        AuthError("bad token"): "token",
        ConfigError("no config at /x"): "not set up",
        BackendError("bad_prompt", "box outside the image"): "box outside the image",
    }
    for exc, phrase in advice.items():
        text = controller_mod.describe_error(exc)
        assert phrase in text and text.endswith(controller_mod.NOTHING_CHANGED), (exc, text)
    assert "Cancelled" in controller_mod.describe_error(worker_mod.Cancelled())


def test_refine_sends_everything_when_the_backend_answers_with_another_session(setup):
    doc, photo, client, ctl, messages = setup
    _run(ctl, ctl.select_person)
    _paint_minus_stroke(doc)
    client.sid = "sid-2"  # the photo changed (or the backend restarted): no history on the backend side
    _run(ctl, ctl.refine)
    assert [c[0] for c in client.calls].count("reset") == 1
    last = client.calls[-1][2]
    assert last["box"] == [2, 1, 6, 5] and [(m["x"], m["y"]) for m in last["stroke_masks"]] == [(3, 2)]
    _run(ctl, ctl.refine)  # same session again: nothing new to send
    assert client.calls[-1][2]["stroke_masks"] == []
