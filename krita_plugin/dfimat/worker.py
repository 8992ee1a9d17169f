"""Backend calls off Krita's GUI thread.

One daemon thread owns the ``dfimat_client.Client`` (ZeroMQ sockets must stay on one thread) and runs jobs one at a
time; it never touches Krita. Finished jobs, errors and progress go through a queue that :meth:`Worker.pump` drains
on the GUI thread, driven by a short ``QTimer`` (:class:`QtPump`) while work is pending, so every callback — and
with it every document change — runs on the GUI thread.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PUMP_INTERVAL_MS = 30
CLIENT_DISCONNECT = "disconnect"


class Cancelled(Exception):
    """Raised inside a job that noticed it was cancelled."""


@dataclass
class Job:
    """A unit of backend work. ``fn(client, job)`` runs on the worker thread."""

    fn: Callable[[Any, Job], Any]
    on_done: Callable[[Any], None]
    on_error: Callable[[BaseException], None]
    on_progress: Callable[[float, str], None] | None = None
    ident: int = 0
    _cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        """Call between steps of a long job: stops it early once cancelled."""
        if self._cancel.is_set():
            raise Cancelled()

    def progress(self, fraction: float, text: str = "") -> None:
        """Report progress from the worker thread (delivered on the GUI thread by the pump)."""
        worker = self._worker
        if worker is not None:
            worker._events.put(("progress", self, (fraction, text)))

    _worker: Worker | None = None


class Worker:
    """Runs jobs on one background thread; callbacks are delivered by :meth:`pump` on the caller's thread."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._jobs: queue.Queue = queue.Queue()
        self._events: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._pending: set[int] = set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running: Job | None = None
        self.on_busy_changed: Callable[[bool], None] | None = None

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def submit(self, fn: Callable[[Any, Job], Any], on_done: Callable[[Any], None],
               on_error: Callable[[BaseException], None],
               on_progress: Callable[[float, str], None] | None = None) -> Job:
        job = Job(fn, on_done, on_error, on_progress, ident=next(self._ids))
        job._worker = self
        was_busy = self.busy
        self._pending.add(job.ident)
        self._ensure_thread()
        self._jobs.put(job)
        if not was_busy and self.on_busy_changed:
            self.on_busy_changed(True)
        return job

    def cancel_all(self) -> int:
        """Cancel every queued or running job; their results are dropped. Returns how many were pending."""
        count = 0
        with self._lock:
            for job in list(self._jobs.queue):
                job.cancel()
                count += 1
            running = self._running
            if running is not None and not running.cancelled:
                running.cancel()
                count += 1
        return count

    def pump(self) -> int:
        """Deliver finished results, errors and progress; call on the GUI thread. Returns events handled."""
        handled = 0
        while True:
            try:
                kind, job, payload = self._events.get_nowait()
            except queue.Empty:
                break
            handled += 1
            if kind == "progress":
                if job.on_progress and not job.cancelled:
                    job.on_progress(*payload)
                continue
            self._pending.discard(job.ident)
            if job.cancelled or isinstance(payload, Cancelled):
                job.on_error(Cancelled())
            elif kind == "done":
                job.on_done(payload)
            else:
                job.on_error(payload)
            if not self.busy and self.on_busy_changed:
                self.on_busy_changed(False)
        return handled

    def shutdown(self, timeout: float = 2.0) -> None:
        self.cancel_all()
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="dfimat-worker", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._close_client()
                return
            with self._lock:
                self._running = job
            try:
                if job.cancelled:
                    raise Cancelled()
                if self._client is None:
                    self._client = self._client_factory()
                result = job.fn(self._client, job)
                self._events.put(("done", job, result))
            except BaseException as exc:  # handed to the GUI thread, which shows it
                if _connection_lost(exc):
                    # A fresh client next time: the backend may have been restarted or reinstalled.
                    self._close_client()
                self._events.put(("error", job, exc))
            finally:
                with self._lock:
                    self._running = None

    def _close_client(self) -> None:
        client, self._client = self._client, None
        disconnect = getattr(client, CLIENT_DISCONNECT, None)
        if disconnect is not None:
            try:
                disconnect()
            except Exception:  # closing a broken connection must not hide the original error
                pass


def _connection_lost(exc: BaseException) -> bool:
    return type(exc).__name__ in ("BackendNotRunning", "ProtocolVersionError", "AuthError", "TimeoutError",
                                  "ConnectionError", "ImportError", "ModuleNotFoundError", "OSError")


class QtPump:
    """Drives :meth:`Worker.pump` from a QTimer on the GUI thread, running only while jobs are pending."""

    def __init__(self, worker: Worker) -> None:
        from PyQt5.QtCore import QTimer

        self._worker = worker
        self._timer = QTimer()
        self._timer.setInterval(PUMP_INTERVAL_MS)
        self._timer.timeout.connect(worker.pump)
        # Keep whoever listened before (the controller) informed.
        self._listener = worker.on_busy_changed
        worker.on_busy_changed = self._busy_changed

    def _busy_changed(self, busy: bool) -> None:
        if busy:
            self._timer.start()
        else:
            self._timer.stop()
        if self._listener:
            self._listener(busy)
