"""What the action and the docker buttons do: read the document (GUI thread), run the backend calls on the worker,
write the result back (GUI thread). No widgets here, and no Krita calls outside ``document``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import document
from .document import DocumentError
from .intent import NoPromptError, PromptMemory, build_prompts
from .pixels import bgra_to_rgba
from .worker import Cancelled, Job, Worker

# Silence (not work: the backend sends heartbeats while it computes) after which the client reconnects and retries.
CLIENT_TIMEOUT_S = 15.0
POLL_S = 0.02
NOTHING_CHANGED = "Nothing was changed in the document."
SELECT_TITLE = "DFIMat Select Person"
REFINE_TITLE = "DFIMat Refine"
VIEW_MODES = (("On black", "black"), ("On white", "white"), ("On a colour", "colour"), ("Coloured overlay", "overlay"))


def round_report(title: str, what: str, seconds: float, detail: str = "") -> str:
    """The status line after a round: which round, what it changed, how long it took, and from what."""
    what = what.rstrip(".")
    text = f"{title}: {what[:1].lower()}{what[1:]} in {seconds:.1f} s"
    return f"{text} ({detail})." if detail else f"{text}."


@dataclass
class Settings:
    text: str = ""
    output: str = "mask"
    # The matte view: one of VIEW_MODES' values, and the colour (r, g, b) of "colour" and "overlay".
    view_mode: str = "black"
    view_color: tuple[int, int, int] = (255, 0, 255)


def default_client_factory() -> Any:
    """A client configured from the install config (endpoint, token, how to start the backend)."""
    from dfimat_client import Client

    # autostart: the install config records how to start the backend when nothing answers.
    return Client(timeout=CLIENT_TIMEOUT_S, autostart=True)


def call(client: Any, job: Job, method: str, *args: Any, **kwargs: Any) -> Any:
    """Run one client call on the worker thread, polling so that Cancel stops it on the backend too."""
    def progress(info: dict) -> None:
        total = info.get("total") or 0
        if total:
            job.progress(float(info.get("done", 0)) / total, f"{info.get('done', 0)} of {total}")

    running = client.submit(method, *args, progress=progress, **kwargs)
    while True:
        # Cancellation first: a result that arrives after Cancel is dropped, never written.
        if job.cancelled:
            running.cancel()
            raise Cancelled()
        if running.done():
            return running.result()
        time.sleep(POLL_S)


def describe_error(exc: BaseException) -> str:
    """A sentence for the user saying what went wrong and what to do; never a bare traceback."""
    kind = type(exc).__name__
    if isinstance(exc, Cancelled):
        return f"Cancelled. {NOTHING_CHANGED}"
    if isinstance(exc, (DocumentError, NoPromptError)):
        return str(exc)
    if kind == "BackendNotRunning":
        return (f"The DFIMat backend is not running and could not be started ({exc}). Run 'python install.py' "
                f"to set it up, or start it with 'python -m backend serve'. {NOTHING_CHANGED}")
    if kind == "ProtocolVersionError":
        return (f"The DFIMat backend speaks another protocol version than this plug-in ({exc}). Reinstall both "
                f"with 'python install.py'. {NOTHING_CHANGED}")
    if kind == "AuthError":
        return (f"The DFIMat backend refused this plug-in's access token ({exc}). Re-run 'python install.py' so "
                f"both use the same token. {NOTHING_CHANGED}")
    if kind == "ConfigError":
        return (f"DFIMat is not set up on this computer ({exc}). Run 'python install.py' from the DFIMat folder. "
                f"{NOTHING_CHANGED}")
    if kind == "BackendError":
        return f"The DFIMat backend reported an error: {exc}. {NOTHING_CHANGED}"
    if isinstance(exc, ImportError):
        return (f"The plug-in cannot load its backend client ({exc}). Reinstall it with 'python install.py'. "
                f"{NOTHING_CHANGED}")
    return f"Unexpected error ({kind}: {exc}). {NOTHING_CHANGED}"


@dataclass(frozen=True)
class Write:
    """One checked result and the node it goes to, ready to be written."""

    doc: Any
    node: Any
    alpha: bytes
    width: int
    height: int


def _write_all(writes: list[Write], output: str) -> list[str]:
    """Write every result; the messages say what was done."""
    messages: list[str] = []
    for write in writes:
        try:
            messages.append(document.write_output(write.doc, write.node, write.alpha, write.width, write.height,
                                                  output))
        except Exception as exc:
            if not messages:
                raise
            # Only Krita itself can fail here (the results were checked): the user must learn that the earlier
            # layers did change, which the usual "nothing was changed" would deny.
            raise DocumentError(
                f"Writing to layer '{write.node.name()}' failed ({type(exc).__name__}: {exc}) after "
                f"{len(messages)} of {len(writes)} layer(s) got their result: {' '.join(messages)} "
                "Edit > Undo takes those back."
            ) from exc
    return messages


class Controller:
    """One per Krita instance; the action and every docker share it."""

    def __init__(self, worker: Worker | None = None) -> None:
        self.worker = worker or Worker(default_client_factory)
        self.settings = Settings()
        self.memory = PromptMemory()
        self.sessions: dict[str, str] = {}
        # Per target key: what the last Select/Refine wrote (see document.write_result), kept only while the
        # backend's history and ``memory`` are known to match it. Refine continues a session only while that
        # result is still in the document: once it is undone or deleted, the strokes behind it must stop counting.
        self._results: dict[str, str] = {}
        self._last_target: str | None = None
        self.on_status: list[Callable[[str, bool], None]] = []
        self.on_progress: list[Callable[[float, str], None]] = []
        self.on_busy: list[Callable[[bool], None]] = []
        # The matte view (widgets in view.py): shown or not, and the layer whose result was just written.
        self.view_open = False
        self.on_view: list[Callable[[bool], None]] = []
        self.on_result: list[Callable[[str], None]] = []
        self.worker.on_busy_changed = self._busy
        self.last_message = ""
        self.last_error = False

    # --- user commands -----------------------------------------------------------------------------------------

    def select_person(self, doc: Any = None, node: Any = None) -> Job | None:
        """A fresh selection: the session's earlier rounds are forgotten.

        ``doc``/``node`` default to the active document and layer (scripts without a window pass them).
        """
        return self._matte(True, doc, node)

    def refine(self, doc: Any = None, node: Any = None) -> Job | None:
        """Another round in the same session: only prompts not sent before are added.

        If the last result is no longer in the document (Edit > Undo, deleted), this is a fresh selection instead.
        """
        return self._matte(False, doc, node)

    def reset(self, doc: Any = None, node: Any = None) -> Job | None:
        try:
            doc, node = self._context(doc, node)
        except DocumentError as exc:
            self._status(describe_error(exc), True)
            return None
        key = f"krita:{document.node_id(node)}"
        self.memory.forget(key)
        self._results.pop(key, None)
        sid = self.sessions.pop(key, None)
        if sid is None:
            self._status(f"DFIMat prompts for '{node.name()}' cleared.", False)
            return None
        return self._submit(lambda client, job: call(client, job, "reset", sid),
                            lambda _: self._status(f"DFIMat prompts for '{node.name()}' cleared.", False))

    def masks_for_selected_layers(self) -> Job | None:
        """The same prompts applied to every selected layer, one mask each.

        All or nothing: every layer is looked up again and every result checked before the first mask is written,
        so a layer deleted or an image resized while the backend worked leaves every layer unchanged.
        """
        if self._refuse_when_busy():
            return None
        try:
            doc = document.active_document()
            nodes = document.selected_layers(doc)
            if not nodes:
                raise DocumentError("Select one or more paint layers in the Layers docker.")
            targets = [document.read_target(doc, n) for n in nodes]
            prompts = build_prompts(document.read_scene(doc, self.settings.text, targets[0].name))
        except (DocumentError, NoPromptError) as exc:
            self._status(describe_error(exc), True)
            return None
        output = "layer" if self.settings.output == "layer" else "mask"
        wire = prompts.to_wire()
        for target in targets:
            # Each layer's session is reset below: a later Refine there must start over too.
            self._results.pop(target.key, None)

        def run(client: Any, job: Job) -> list:
            results = []
            for index, target in enumerate(targets):
                job.check()
                job.progress(index / len(targets), f"Layer {index + 1} of {len(targets)}: {target.name}")
                sid = call(client, job, "open_image", bgra_to_rgba(target.bgra), target.width, target.height, 4,
                           key=target.key)
                call(client, job, "reset", sid)
                results.append((target, call(client, job, "predict", sid, wire)))
            job.check()
            return results

        started = time.monotonic()

        def done(results: list) -> None:
            writes = [self._resolve(target, result, output) for target, result in results]
            self._status(round_report("DFIMat Masks for Selected Layers", " ".join(_write_all(writes, output)),
                                      time.monotonic() - started, prompts.summary()), False)

        return self._submit(run, done)

    def split_people(self, doc: Any = None, node: Any = None) -> Job | None:
        """One cut-out layer per person the backend finds in the active layer."""
        if self._refuse_when_busy():
            return None
        try:
            doc, node = self._context(doc, node)
            target = document.read_target(doc, node)
        except DocumentError as exc:
            self._status(describe_error(exc), True)
            return None

        started = time.monotonic()

        def run(client: Any, job: Job) -> list:
            job.progress(0.05, "Finding people")
            item = {"pixels": bgra_to_rgba(target.bgra), "width": target.width, "height": target.height,
                    "channels": 4, "prompts": {}, "every_person": True}
            result = call(client, job, "batch", [item])
            job.check()
            (found,) = result.items
            if found.get("error") is not None:
                raise found["error"]
            return [(m["alpha"], m["width"], m["height"]) for m in found["masks"]]

        def done(alphas: list) -> None:
            doc_now, node_now = document.find_node(target.node_id)
            if node_now is None:
                raise DocumentError(f"Layer '{target.name}' is gone. {NOTHING_CHANGED}")
            if not alphas:
                self._status(f"No people found in '{target.name}'. {NOTHING_CHANGED}", False)
                return
            message = document.add_person_layers(doc_now, node_now, [a for a, _, _ in alphas], target.width,
                                                 target.height)
            message = message[:1].lower() + message[1:]
            self._status(round_report("DFIMat Split People", f"{len(alphas)} people found; {message}",
                                      time.monotonic() - started), False)

        return self._submit(run, done)

    def cancel(self) -> None:
        if self.worker.cancel_all():
            self._status(f"Cancelling… {NOTHING_CHANGED}", False)

    def toggle_view(self) -> None:
        """Show or hide the matte view; it only reads the document, so nothing is changed or recorded."""
        self.set_view(not self.view_open)

    def set_view(self, shown: bool) -> None:
        if shown == self.view_open:
            return
        self.view_open = shown
        for listener in self.on_view:
            listener(shown)

    def view_target(self, doc: Any = None) -> tuple[Any, Any]:
        """(document, layer) the matte view shows: the layer of the last round, else the active one."""
        return self._context(doc, None)

    # --- internals ---------------------------------------------------------------------------------------------

    def _context(self, doc: Any, node: Any) -> tuple[Any, Any]:
        doc = doc if doc is not None else document.active_document()
        return doc, node if node is not None else document.pick_target_node(doc, self._last_target)

    def _refuse_when_busy(self) -> bool:
        # One result at a time: a second run would write over the layer the first one is about to change.
        if self.worker.busy:
            self._status("DFIMat is still working: wait for it or press Cancel.", True)
        return self.worker.busy

    def _matte(self, fresh: bool, doc: Any, node: Any) -> Job | None:
        if self._refuse_when_busy():
            return None
        try:
            doc, node = self._context(doc, node)
            target = document.read_target(doc, node)
            prompts = build_prompts(document.read_scene(doc, self.settings.text, target.name))
        except (DocumentError, NoPromptError) as exc:
            self._status(describe_error(exc), True)
            return None
        self._last_target = target.node_id
        previous = self._results.pop(target.key, None)
        # Until this run's result is written, the backend's history may hold a round the document does not show
        # (cancelled, failed): the next Refine then starts over.
        restarted = not fresh and previous is not None and not document.result_present(doc, previous)
        fresh = fresh or previous is None or restarted
        this_round = prompts if fresh else self.memory.new_round(target.key, prompts)
        known_sid = self.sessions.get(target.key)
        output = self.settings.output
        started = time.monotonic()

        def run(client: Any, job: Job) -> tuple:
            job.progress(0.1, "Sending the image")
            sid = call(client, job, "open_image", bgra_to_rgba(target.bgra), target.width, target.height, 4,
                       key=target.key)
            # Another session id means the backend holds no history for this layer any more (its pixels changed,
            # painted, or a paint undone, or the backend restarted): send everything, as a first round.
            start_over = fresh or sid != known_sid
            if fresh:
                call(client, job, "reset", sid)
            sent = prompts if start_over else this_round
            job.progress(0.4, f"Matting ({sent.summary()})")
            result = call(client, job, "predict", sid, sent.to_wire())
            job.check()
            return sid, result, start_over, sent

        def done(payload: tuple) -> None:
            sid, result, start_over, sent = payload
            self.sessions[target.key] = sid
            if start_over:
                self.memory.forget(target.key)
            self.memory.remember(target.key, sent)
            write = self._resolve(target, result, output)
            title = SELECT_TITLE if start_over else REFINE_TITLE
            message, self._results[target.key] = document.write_result(
                write.doc, write.node, write.alpha, write.width, write.height, output, title)
            message = round_report(title, message, time.monotonic() - started, sent.summary())
            if restarted:
                message += " (The previous DFIMat result is no longer in the document, so DFIMat started over " \
                           "from the current prompts.)"
            self._status(message, False)
            for listener in self.on_result:
                listener(target.node_id)

        return self._submit(run, done)

    def _resolve(self, target: document.Target, result: tuple, output: str) -> Write:
        """The target's node now and its checked result; raises (changing nothing) if either is unusable."""
        alpha, width, height = result
        doc, node = document.find_node(target.node_id)
        if node is None:
            raise DocumentError(f"Layer '{target.name}' was deleted while DFIMat was working. {NOTHING_CHANGED}")
        alpha = bytes(alpha)
        document.check_output(doc, alpha, width, height, output)
        return Write(doc, node, alpha, width, height)

    def _submit(self, run: Callable[[Any, Job], Any], done: Callable[[Any], None]) -> Job:
        def guarded_done(payload: Any) -> None:
            try:
                done(payload)
            except Exception as exc:  # a failed write is reported like any other error
                self._status(describe_error(exc), True)

        return self.worker.submit(run, guarded_done, lambda exc: self._status(describe_error(exc), True),
                                  self._progress)

    def _progress(self, fraction: float, text: str) -> None:
        for listener in self.on_progress:
            listener(fraction, text)

    def _busy(self, busy: bool) -> None:
        for listener in self.on_busy:
            listener(busy)

    def _status(self, text: str, error: bool) -> None:
        self.last_message, self.last_error = text, error
        for listener in self.on_status:
            listener(text, error)
