"""Content-aware file copying: a rerun touches no file whose bytes are already right."""

from __future__ import annotations

import filecmp
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

# Build and cache debris that must never travel into an editor's plug-in folder.
SKIP_NAMES = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".DS_Store"})
SKIP_SUFFIXES = (".pyc", ".pyo", ".part")


def _wanted(name: str) -> bool:
    return name not in SKIP_NAMES and not name.endswith(SKIP_SUFFIXES)


def source_files(src: Path) -> list[Path]:
    """Files under ``src`` worth installing, as paths relative to ``src``, sorted."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if _wanted(d))
        for name in sorted(filenames):
            if _wanted(name):
                out.append((Path(dirpath) / name).relative_to(src))
    return out


def copy_file(src: Path, dst: Path) -> bool:
    """Copy when missing or different; returns True when ``dst`` was written."""
    if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    shutil.copy2(src, dst)
    return True


def sync_tree(src: Path, dst: Path, keep: Iterable[str] = ()) -> list[Path]:
    """Make ``dst`` mirror ``src``; returns the destination files that changed.

    Files in ``dst`` that ``src`` no longer has are removed (an upgrade must not leave stale modules that
    shadow new ones), except top-level entries named in ``keep`` (e.g. ``vendor``, filled separately).
    """
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    keep = set(keep)
    wanted = source_files(src)
    changed = [dst / rel for rel in wanted if copy_file(src / rel, dst / rel)]
    wanted_set = set(wanted)
    if dst.is_dir():
        for dirpath, dirnames, filenames in os.walk(dst, topdown=True):
            rel_dir = Path(dirpath).relative_to(dst)
            # Caches the editor's Python writes at run time are not ours to judge; uninstall removes them.
            dirnames[:] = [d for d in dirnames if _wanted(d)]
            filenames = [f for f in filenames if _wanted(f)]
            if rel_dir == Path("."):
                dirnames[:] = [d for d in dirnames if d not in keep]
                filenames = [f for f in filenames if f not in keep]
            for name in filenames:
                rel = rel_dir / name
                if rel not in wanted_set:
                    (dst / rel).unlink()
                    changed.append(dst / rel)
        _remove_empty_dirs(dst, keep)
    return changed


def _remove_empty_dirs(root: Path, keep: set[str]) -> None:
    for dirpath, _dirnames, _filenames in sorted(os.walk(root), key=lambda t: -len(t[0])):
        p = Path(dirpath)
        if p == root or (p.parent == root and p.name in keep):
            continue
        if any(part in keep for part in p.relative_to(root).parts[:1]):
            continue
        try:
            p.rmdir()
        except OSError:
            pass  # not empty (e.g. a __pycache__ the editor created): leave it


def make_executable(path: Path) -> bool:
    """Add the execute bits matching the read bits; True when the mode changed."""
    mode = path.stat().st_mode
    want = mode | ((mode & 0o444) >> 2)
    if want == mode:
        return False
    path.chmod(want)
    return True
