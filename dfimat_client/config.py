"""Read the install config written by install.py (schema in docs/CONTRACTS.md) and the token file."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
DEFAULT_TCP_ENDPOINT = "tcp://127.0.0.1:5599"


class ConfigError(RuntimeError):
    """The install config or token file is missing or unreadable; the message says which file and why."""


@dataclass
class Config:
    endpoint: str
    token_file: Path | None = None
    backend_command: list[str] = field(default_factory=list)
    venv: str | None = None
    models_dir: str | None = None
    device: str = "cpu"
    version: str | None = None
    path: Path | None = None

    def read_token(self) -> str:
        if self.token_file is None:
            raise ConfigError(f"no token_file in {self.path or 'the config'}")
        return read_token(self.token_file)


def config_path() -> Path:
    """Where the install config lives on this platform (``$DFIMAT_CONFIG`` wins)."""
    env = os.environ.get("DFIMAT_CONFIG")
    if env:
        return Path(env)
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "dfimat" / "config.json"


def runtime_dir() -> Path:
    """A per-user folder for the ipc socket: ``$XDG_RUNTIME_DIR/dfimat`` or a private temp folder."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir():
        return Path(base) / "dfimat"
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"dfimat-{uid}"


def default_endpoint() -> str:
    # ZeroMQ ipc needs Unix domain sockets; Windows gets loopback TCP.
    if sys.platform.startswith("win"):
        return DEFAULT_TCP_ENDPOINT
    return f"ipc://{runtime_dir() / 'backend.sock'}"


def load_config(path: Path | str | None = None) -> Config:
    """Load the install config; raise ConfigError naming the file when it is missing or malformed."""
    p = Path(path) if path is not None else config_path()
    try:
        raw: Any = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"DFIMat is not installed: no config at {p} (run install.py)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the DFIMat config {p}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"the DFIMat config {p} must be a JSON object")
    if raw.get("schema") != SCHEMA:
        raise ConfigError(f"the DFIMat config {p} has schema {raw.get('schema')!r}, expected {SCHEMA}")
    cmd = raw.get("backend_command") or []
    if not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
        raise ConfigError(f"'backend_command' in {p} must be a list of strings")
    endpoint = raw.get("endpoint") or default_endpoint()
    if not isinstance(endpoint, str):
        raise ConfigError(f"'endpoint' in {p} must be a string")
    token_file = raw.get("token_file")
    return Config(endpoint=endpoint, token_file=Path(token_file) if token_file else None, backend_command=cmd,
                  venv=raw.get("venv"), models_dir=raw.get("models_dir"), device=raw.get("device") or "cpu",
                  version=raw.get("version"), path=p)


def read_token(path: Path | str) -> str:
    p = Path(path)
    try:
        token = p.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"token file {p} does not exist (run install.py)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read token file {p}: {exc}") from None
    if not token:
        raise ConfigError(f"token file {p} is empty")
    return token


def write_token(path: Path | str, token: str) -> Path:
    """Create a token file readable only by the user (mode 0600, created with that mode, never widened)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    if hasattr(os, "chmod"):
        os.chmod(p, 0o600)
    return p
