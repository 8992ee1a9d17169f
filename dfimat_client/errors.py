"""Exceptions raised by the DFIMat client. Every one carries a machine-readable ``code`` and a sentence."""

from __future__ import annotations

from typing import Any

from dfimat_client import protocol as P

E_NOT_RUNNING = "not_running"


class BackendError(Exception):
    """The backend answered with an error (or could not be asked); ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
        self.details = details or {}


class BackendNotRunning(BackendError):
    """No backend answered at the endpoint within the timeout, after the retries."""

    def __init__(self, message: str) -> None:
        super().__init__(E_NOT_RUNNING, message)


class ProtocolVersionError(BackendError):
    """The backend speaks another protocol version: update the plugin or the backend."""

    def __init__(self, message: str) -> None:
        super().__init__(P.E_PROTOCOL_VERSION, message)


class AuthError(BackendError):
    """The backend refused the token: the plugin and the backend come from different installs."""

    def __init__(self, message: str) -> None:
        super().__init__(P.E_AUTH, message)


def from_reply(error: dict[str, Any]) -> BackendError:
    code = str(error.get("code", P.E_INTERNAL))
    message = str(error.get("message", "the backend reported an error"))
    if code == P.E_AUTH:
        return AuthError(message)
    if code == P.E_PROTOCOL_VERSION:
        return ProtocolVersionError(message)
    details = error.get("details")
    return BackendError(code, message, details if isinstance(details, dict) else None)
