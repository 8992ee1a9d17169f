"""Copy the GIMP and Krita plug-ins into an editor's plug-in folder, with ``dfimat_client`` vendored."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from installer.files import copy_file, make_executable, source_files, sync_tree

REPO = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "dfimat"
GIMP_SRC = REPO / "gimp_plugin" / PLUGIN_NAME
KRITA_SRC = REPO / "krita_plugin" / PLUGIN_NAME
KRITA_DESKTOP = REPO / "krita_plugin" / f"{PLUGIN_NAME}.desktop"
# Krita reads action definitions (default shortcuts, the Keyboard Shortcuts list) from its resource folder's
# actions/, the pykrita folder's parent, when it starts.
KRITA_ACTIONS = REPO / "krita_plugin" / f"{PLUGIN_NAME}.action"
CLIENT_SRC = REPO / "dfimat_client"
VENDOR = "vendor"
KRITARC_KEY = ("python", f"enable_{PLUGIN_NAME}")


def _vendor_client(plugin_dir: Path) -> list[Path]:
    # Only the client package is mirrored; pyzmq that may sit next to it in vendor/ is left alone.
    return sync_tree(CLIENT_SRC, plugin_dir / VENDOR / "dfimat_client")


def deploy_gimp_plugin(plugins_root: Path) -> tuple[Path, list[Path]]:
    """Install the GIMP 3 plug-in; returns its folder and the files that changed (empty on a no-op rerun)."""
    dest = Path(plugins_root) / PLUGIN_NAME
    if not (GIMP_SRC / f"{PLUGIN_NAME}.py").is_file():
        raise FileNotFoundError(f"{GIMP_SRC} has no {PLUGIN_NAME}.py entry point")
    changed = sync_tree(GIMP_SRC, dest, keep=(VENDOR,))
    changed += _vendor_client(dest)
    entry = dest / f"{PLUGIN_NAME}.py"
    # GIMP silently skips a plug-in whose entry file is not executable.
    if make_executable(entry) and entry not in changed:
        changed.append(entry)
    return dest, changed


def install_gimp_plugin(plugins_root: Path) -> Path:
    """Install the GIMP 3 plug-in into ``plugins_root`` (a GIMP ``plug-ins`` folder); returns its folder."""
    return deploy_gimp_plugin(plugins_root)[0]


def krita_actions_file(pykrita_root: Path) -> Path:
    """Where the plug-in's ``.action`` file goes for the Krita whose pykrita folder is ``pykrita_root``."""
    return Path(pykrita_root).parent / "actions" / KRITA_ACTIONS.name


def deploy_krita_plugin(pykrita_root: Path, kritarc: Path | None = None) -> tuple[Path, list[Path]]:
    """Install the Krita plug-in and its actions file and enable it; returns its folder and what changed
    (kritarc included)."""
    root = Path(pykrita_root)
    dest = root / PLUGIN_NAME
    if not KRITA_DESKTOP.is_file():
        raise FileNotFoundError(f"{KRITA_DESKTOP} is missing")
    changed = sync_tree(KRITA_SRC, dest, keep=(VENDOR,))
    changed += _vendor_client(dest)
    if copy_file(KRITA_DESKTOP, root / KRITA_DESKTOP.name):
        changed.append(root / KRITA_DESKTOP.name)
    actions = krita_actions_file(root)
    actions.parent.mkdir(parents=True, exist_ok=True)
    if copy_file(KRITA_ACTIONS, actions):
        changed.append(actions)
    if kritarc is not None and set_kritarc_key(Path(kritarc), *KRITARC_KEY, "true"):
        changed.append(Path(kritarc))
    return dest, changed


def install_krita_plugin(pykrita_root: Path, kritarc: Path | None = None) -> Path:
    """Install the Krita plug-in into ``pykrita_root``; enable it in ``kritarc`` when given; returns its folder."""
    return deploy_krita_plugin(pykrita_root, kritarc)[0]


def kritarc_enabled(kritarc: Path) -> bool:
    """Is ``[python] enable_dfimat=true`` set?"""
    if not Path(kritarc).is_file():
        return False
    section = None
    for line in Path(kritarc).read_text(encoding="utf-8", errors="replace").splitlines():
        m = _SECTION.match(line)
        if m:
            section = m.group(1)
        elif section == KRITARC_KEY[0] and line.split("=", 1)[0].strip() == KRITARC_KEY[1]:
            return line.split("=", 1)[1].strip().lower() == "true"
    return False


def plugin_drift(kind: str, plugin_dir: Path) -> list[str]:
    """Installed files that are missing or differ from the repo's sources (what --check reports)."""
    import filecmp

    pairs = [(GIMP_SRC if kind == "gimp" else KRITA_SRC, plugin_dir), (CLIENT_SRC, plugin_dir / VENDOR / "dfimat_client")]
    if kind == "krita":
        pairs.append((KRITA_DESKTOP, plugin_dir.parent / KRITA_DESKTOP.name))
        pairs.append((KRITA_ACTIONS, krita_actions_file(plugin_dir.parent)))
    problems = []
    for src, dst in pairs:
        rels = [Path()] if src.is_file() else source_files(src)
        for rel in rels:
            s, d = (src, dst) if rel == Path() else (src / rel, dst / rel)
            if not d.is_file():
                problems.append(f"{d} missing")
            elif not filecmp.cmp(s, d, shallow=False):
                problems.append(f"{d} differs from the repo")
    if kind == "gimp":
        entry = plugin_dir / f"{PLUGIN_NAME}.py"
        if entry.is_file() and not os.access(entry, os.X_OK):
            problems.append(f"{entry} is not executable (GIMP skips it)")
    return problems


_SECTION = re.compile(r"^\s*\[([^\]]*)\]")


def set_kritarc_key(path: Path, section: str, key: str, value: str) -> bool:
    """Set ``key=value`` in ``[section]`` of a KConfig file, keeping every other line byte for byte.

    configparser would lowercase keys, drop comments and choke on KConfig's ``[a][b]`` groups, so this edits
    lines. Returns True when the file was written.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    entry = f"{key}={value}{newline}"
    current: str | None = None
    section_end: int | None = None
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m:
            if current == section:
                break
            current = m.group(1)
            if current == section:
                section_end = i + 1
            continue
        if current == section:
            name = line.split("=", 1)[0].strip()
            if "=" in line and name == key:
                if line.rstrip("\r\n") == entry.rstrip("\r\n"):
                    return False
                lines[i] = entry
                _write_atomic(path, "".join(lines))
                return True
            if line.strip():
                section_end = i + 1
    if section_end is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += newline
        if lines and lines[-1].strip():
            lines.append(newline)
        lines += [f"[{section}]{newline}", entry]
    else:
        if not lines[section_end - 1].endswith("\n"):
            lines[section_end - 1] += newline
        lines.insert(section_end, entry)
    _write_atomic(path, "".join(lines))
    return True


def remove_kritarc_key(path: Path, section: str, key: str) -> bool:
    """Drop ``key`` from ``[section]`` (used by --uninstall); returns True when the file changed."""
    if not path.exists():
        return False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    current = None
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m:
            current = m.group(1)
        elif current == section and "=" in line and line.split("=", 1)[0].strip() == key:
            del lines[i]
            rest = "".join(lines)
            if rest.strip() in ("", f"[{section}]"):
                path.unlink()  # the installer created this file and nothing else was ever added to it
            else:
                _write_atomic(path, rest)
            return True
    return False


def _write_atomic(path: Path, text: str) -> None:
    # A crash mid-write must not leave Krita with a truncated kritarc (it holds all of the user's settings).
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
