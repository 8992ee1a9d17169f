"""What this installer created, so ``--uninstall`` removes exactly that, and the incomplete-install marker."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from installer.paths import state_dir

RECORD_NAME = "install-record.json"
MARKER_NAME = "install-incomplete"


def record_path() -> Path:
    return state_dir() / RECORD_NAME


def marker_path() -> Path:
    return state_dir() / MARKER_NAME


class Record:
    """A JSON list of owned paths and edited config keys, saved after every change.

    Saving eagerly means an install that dies half-way can still be uninstalled cleanly.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or record_path()
        self.data: dict = {"schema": 1, "paths": [], "dirs": [], "kritarc": []}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"install record {self.path} is unreadable ({exc}); fix or delete it") from exc
            for key in ("paths", "dirs", "kritarc"):
                self.data[key] = list(loaded.get(key, []))

    @property
    def paths(self) -> list[str]:
        return self.data["paths"]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def add_path(self, path: Path) -> None:
        """Own ``path`` (a file or a whole folder); uninstall deletes it."""
        s = str(Path(path).absolute())
        if s not in self.data["paths"]:
            self.data["paths"].append(s)
            self._save()

    def make_dirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents, owning only the ones that did not exist."""
        missing = []
        p = Path(path).absolute()
        while not p.exists():
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
        new = [str(d) for d in missing if str(d) not in self.data["dirs"]]
        if new:
            self.data["dirs"].extend(new)
            self._save()

    def add_kritarc_key(self, kritarc: Path, section: str, key: str) -> None:
        entry = {"path": str(Path(kritarc).absolute()), "section": section, "key": key}
        if entry not in self.data["kritarc"]:
            self.data["kritarc"].append(entry)
            self._save()

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


def remove_owned(record: Record) -> list[str]:
    """Delete everything in the record (paths, then the folders it created, if empty); returns what went."""
    from installer.plugins import remove_kritarc_key

    removed: list[str] = []
    for entry in record.data["kritarc"]:
        if remove_kritarc_key(Path(entry["path"]), entry["section"], entry["key"]):
            removed.append(f"{entry['path']} [{entry['section']}] {entry['key']}")
    for s in sorted(record.paths, key=len, reverse=True):
        p = Path(s)
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
        else:
            continue
        removed.append(s)
    for s in sorted(record.data["dirs"], key=len, reverse=True):
        try:
            Path(s).rmdir()
            removed.append(s)
        except OSError:
            pass  # holds something we did not put there: keep it
    return removed
