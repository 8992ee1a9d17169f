"""The Debian 13 (trixie) root for the real GIMP 3.0 and Krita 5.2: the functions tests have always called.

Everything lives in tests/editors/sandbox.py (``sandbox.TRIXIE``; Krita 5.1's Debian 12 root is
``sandbox.BOOKWORM``); this module keeps the older names working:

- ``skip_reason() -> str | None``, ``ensure_root() -> Path``, ``root_path() -> Path``;
- ``run_in_root(cmd, binds=..., env=..., ...) -> CompletedProcess`` (same arguments as
  ``sandbox.DebianRoot.run_in_root``);
- ``xvfb_run()``, ``host_mirror()``, ``PACKAGES``.

New tests should call ``sandbox.require(sandbox.TRIXIE)``, which also turns a skip into a failure under CI=true.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.editors.sandbox import TRIXIE, host_mirror, xvfb_run

__all__ = ["PACKAGES", "ensure_root", "host_mirror", "root_path", "run_in_root", "skip_reason", "xvfb_run"]

PACKAGES = TRIXIE.packages


def root_path() -> Path:
    return TRIXIE.root_path()


def skip_reason() -> str | None:
    return TRIXIE.skip_reason()


def ensure_root() -> Path:
    return TRIXIE.ensure_root()


def run_in_root(*args, **kwargs) -> subprocess.CompletedProcess:
    return TRIXIE.run_in_root(*args, **kwargs)


if __name__ == "__main__":
    why = skip_reason()
    if why:
        print(f"unavailable: {why}")
        sys.exit(1)
    print(ensure_root())
