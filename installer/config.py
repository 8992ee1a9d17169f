"""The per-install config the plugins read (schema in docs/CONTRACTS.md) and the shared-secret token file."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

from installer.paths import is_windows

SCHEMA = 1
TOKEN_NAME = "token"


def build_config(
    *, endpoint: str, token_file: Path, venv: Path, python: Path, models_dir: Path, device: str, version: str
) -> dict:
    return {
        "schema": SCHEMA,
        "endpoint": endpoint,
        "token_file": str(token_file),
        "backend_command": [str(python), "-m", "backend", "serve"],
        "venv": str(venv),
        "models_dir": str(models_dir),
        "device": device,
        "version": version,
    }


def render(config: dict) -> str:
    return json.dumps(config, indent=2) + "\n"


def write_config(path: Path, config: dict) -> bool:
    """Write the config when its content differs; True when written."""
    text = render(config)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def read_config(path: Path) -> dict:
    """Load and validate a config; raises ValueError naming the problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: expected schema {SCHEMA}, found {data.get('schema') if isinstance(data, dict) else data!r}")
    missing = [k for k in ("endpoint", "token_file", "backend_command", "venv", "models_dir", "device") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing keys {', '.join(missing)}")
    return data


def token_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable token file, or None when it is."""
    if not path.is_file():
        return "missing"
    text = path.read_text(encoding="utf-8").strip()
    if len(text) < 32 or any(c not in "0123456789abcdef" for c in text):
        return "not a hex token"
    if not is_windows() and stat.S_IMODE(path.stat().st_mode) & 0o077:
        return f"mode {oct(stat.S_IMODE(path.stat().st_mode))}, readable by others (want 0600)"
    return None


def ensure_token(path: Path) -> str:
    """Create the token once (0600 from the first byte), or tighten a loose mode; returns what was done."""
    problem = token_problem(path)
    if problem is None:
        return ""
    if problem.startswith("mode"):
        path.chmod(0o600)
        return "tightened mode to 0600"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    # O_EXCL + mode: the secret is never readable by others, not even between create and chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return "created" if problem == "missing" else f"replaced ({problem})"
