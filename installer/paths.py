"""Per-OS default locations: config, token, backend venv, state record, endpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "dfimat"
TCP_ENDPOINT = "tcp://127.0.0.1:5599"
# sun_path holds 108 bytes on Linux, 104 on macOS; ZeroMQ fails to bind a longer ipc path.
_IPC_PATH_MAX = 100


def is_windows() -> bool:
    return sys.platform.startswith("win")


def is_macos() -> bool:
    return sys.platform == "darwin"


def home() -> Path:
    return Path.home()


def _env_dir(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


def config_home() -> Path:
    """The user's config root (``$XDG_CONFIG_HOME``, ``%APPDATA%``, ``~/Library/Application Support``)."""
    if is_windows():
        return _env_dir("APPDATA", home() / "AppData" / "Roaming")
    if is_macos():
        return home() / "Library" / "Application Support"
    return _env_dir("XDG_CONFIG_HOME", home() / ".config")


def data_home() -> Path:
    """The user's data root (``$XDG_DATA_HOME``, ``%LOCALAPPDATA%``, ``~/Library/Application Support``)."""
    if is_windows():
        return _env_dir("LOCALAPPDATA", home() / "AppData" / "Local")
    if is_macos():
        return home() / "Library" / "Application Support"
    return _env_dir("XDG_DATA_HOME", home() / ".local" / "share")


def config_path() -> Path:
    """Where the plugins look for the install config (``$DFIMAT_CONFIG`` wins), as in docs/CONTRACTS.md."""
    override = os.environ.get("DFIMAT_CONFIG")
    return Path(override) if override else config_home() / APP / "config.json"


def state_dir() -> Path:
    """Folder of the config file; also holds the token, the install record and the incomplete marker."""
    return config_path().parent


def default_venv() -> Path:
    return data_home() / APP / "venv"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if is_windows() else "bin/python")


def default_endpoint() -> str:
    """A per-user Unix socket where possible (no port clashes, file permissions guard it), else loopback TCP."""
    if is_windows():
        return TCP_ENDPOINT
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime or not Path(runtime).is_dir():
        return TCP_ENDPOINT
    sock = Path(runtime) / APP / "backend.sock"
    if len(str(sock)) > _IPC_PATH_MAX:
        return TCP_ENDPOINT
    return f"ipc://{sock}"
