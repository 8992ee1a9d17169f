"""The plug-in's connection to the DFIMat backend: the vendored client, user-facing errors, progress.

Pure Python (no GIMP): the GIMP entry module passes callbacks for progress, so this is testable anywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
# Silence allowed before the client reconnects and resends. The backend sends a heartbeat every half second
# while it works and is only declared ready after loading the model, so this bounds the wait on a dead backend
# (about three times this) without cutting long model work short.
TIMEOUT_S = 20.0


class UserError(RuntimeError):
    """A failure the user can fix; the message says how. Raised before anything in the image changes."""


def _import_client():
    if VENDOR.is_dir() and str(VENDOR) not in sys.path:
        sys.path.insert(0, str(VENDOR))
    try:
        import dfimat_client
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        if missing and missing.startswith("zmq"):
            raise UserError(
                "DFIMat needs pyzmq in GIMP's Python. On Debian/Ubuntu: sudo apt install python3-zmq; "
                "elsewhere re-run install.py, which puts it next to the plug-in."
            ) from exc
        raise UserError(
            f"The DFIMat plug-in is incomplete ({exc}). Re-run install.py to reinstall it."
        ) from exc
    return dfimat_client


def describe_error(exc: BaseException) -> str:
    """One sentence that says what went wrong and what to do, for a client exception."""
    name = type(exc).__name__
    detail = str(exc).strip()
    if name == "ConfigError":
        return f"DFIMat is not set up: {detail}. Run install.py (python install.py --yes)."
    if name == "BackendNotRunning":
        return (f"The DFIMat backend is not running and could not be started ({detail}). "
                "Start it with 'python -m backend serve' from the DFIMat install, or re-run install.py.")
    if name == "ProtocolVersionError":
        return (f"The DFIMat backend speaks another protocol version ({detail}). Update the plug-in and the "
                "backend together: re-run install.py.")
    if name == "AuthError":
        return (f"The DFIMat backend refused the access token ({detail}). Restart the backend, or re-run "
                "install.py to write a new token.")
    if name == "BackendError":
        code = getattr(exc, "code", None)
        if code == "bad_prompt":
            return f"DFIMat could not use the prompt: {detail}"
        if code == "too_large":
            return f"The image is too large for the DFIMat backend: {detail}"
        return f"The DFIMat backend reported an error: {detail}"
    return f"DFIMat failed: {name}: {detail}"


class Link:
    """A client whose calls keep GIMP's progress bar moving while they wait.

    Calls go through the client's non-blocking ``submit`` and are pumped here, on GIMP's thread, so the
    progress callback may call GIMP directly (libgimp is not thread-safe).
    """

    def __init__(self, tick: Callable[[dict | None], None] | None = None, timeout: float = TIMEOUT_S) -> None:
        self._mod = _import_client()
        self._tick = tick
        try:
            # A GIMP plug-in call is a short-lived process: an auto-started backend watches GIMP itself.
            self.client = self._mod.Client(timeout=timeout, autostart=True, watch_pid=os.getppid())
        except Exception as exc:
            raise UserError(describe_error(exc)) from exc

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            call = self.client.submit(method, *args, **kwargs)
            while not call.done():
                if self._tick is not None:
                    self._tick(call.last_progress)
                self.client.pump(0.1)
            return call.result()
        except UserError:
            raise
        except Exception as exc:
            if isinstance(exc, self._mod.BackendError) or type(exc).__name__ == "ConfigError":
                raise UserError(describe_error(exc)) from exc
            raise

    def open_image(self, pixels: bytes, width: int, height: int, channels: int, key: str) -> str:
        return self._call("open_image", pixels, width, height, channels, key=key)

    def predict(self, session: str, prompts: dict) -> tuple[bytes, int, int]:
        return self._call("predict", session, prompts)

    def reset(self, session: str) -> None:
        self._call("reset", session)

    def batch(self, items: list[dict]) -> list[dict]:
        """Run a batch; returns one entry per item ({"masks": [...], "error": ...}), refusing a cancelled run."""
        result = self._call("batch", items)
        if result.cancelled:
            raise UserError("The DFIMat batch was cancelled; nothing was changed.")
        return result.items

    def disconnect(self) -> None:
        self.client.disconnect()
