"""The model manifest: which weight files exist, their sha256/size, and where to fetch them."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ModelFile:
    model: str
    path: str  # relative to the models folder, forward slashes
    sha256: str | None
    size: int | None
    url: str | None


def manifest_path(models_dir: Path) -> Path:
    """A models folder may carry its own manifest (e.g. a shared download folder); else the repo's is used."""
    own = Path(models_dir) / MANIFEST_NAME
    return own if own.is_file() else REPO_MODELS / MANIFEST_NAME


def load_manifest(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"model manifest {path} is unreadable: {exc}") from exc
    if data.get("schema") != 1 or not isinstance(data.get("models"), list):
        raise ValueError(f"model manifest {path}: expected {{'schema': 1, 'models': [...]}}")
    for m in data["models"]:
        for key in ("name", "version", "license", "default", "files"):
            if key not in m:
                raise ValueError(f"model manifest {path}: model {m.get('name', '?')!r} lacks {key!r}")
        for f in m["files"]:
            if "path" not in f or Path(f["path"]).is_absolute() or ".." in Path(f["path"]).parts:
                raise ValueError(f"model manifest {path}: bad file path {f.get('path')!r} in {m['name']!r}")
    return data


def default_files(manifest: dict, names: list[str] | None = None) -> list[ModelFile]:
    """Files of the default models, or of the named ones."""
    out = []
    known = {m["name"] for m in manifest["models"]}
    for name in names or []:
        if name not in known:
            raise ValueError(f"no model {name!r} in the manifest (have: {', '.join(sorted(known))})")
    for m in manifest["models"]:
        if (names and m["name"] in names) or (not names and m["default"]):
            for f in m["files"]:
                out.append(ModelFile(m["name"], f["path"], f.get("sha256"), f.get("size"), f.get("url")))
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(models_dir: Path, f: ModelFile) -> str | None:
    """Why the local copy of ``f`` is unusable, or None when size and sha256 match the manifest."""
    p = Path(models_dir) / f.path
    if not p.is_file():
        return "missing"
    if f.sha256 is None:
        return "the manifest has no sha256 for it (run: python -m installer.models --refresh)"
    size = p.stat().st_size
    if f.size is not None and size != f.size:
        return f"size {size} bytes, manifest says {f.size}"
    digest = sha256_of(p)
    if digest != f.sha256:
        return f"sha256 {digest[:12]}…, manifest says {f.sha256[:12]}… (corrupted or replaced)"
    return None


def refresh(manifest_file: Path, models_dir: Path) -> list[str]:
    """Record the sha256/size of the local copies of url-less files (the committed weights); returns changes.

    Used by whoever commits new weights, so the manifest never has to be edited by hand.
    """
    data = load_manifest(manifest_file)
    changes = []
    for m in data["models"]:
        for f in m["files"]:
            p = Path(models_dir) / f["path"]
            if f.get("url") or not p.is_file():
                continue
            digest, size = sha256_of(p), p.stat().st_size
            if f.get("sha256") != digest or f.get("size") != size:
                f["sha256"], f["size"] = digest, size
                changes.append(f"{f['path']}: sha256 {digest}, {size} bytes")
    if changes:
        Path(manifest_file).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return changes


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m installer.models", description="Maintain models/manifest.json")
    ap.add_argument("--refresh", action="store_true", help="write sha256/size of the committed weights")
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS)
    args = ap.parse_args(argv)
    mf = manifest_path(args.models_dir)
    if not args.refresh:
        bad = 0
        for f in default_files(load_manifest(mf)):
            problem = verify(args.models_dir, f)
            bad += problem is not None
            print(f"{f.path}: {problem or 'ok'}")
        return 1 if bad else 0
    changes = refresh(mf, args.models_dir)
    print("\n".join(changes) if changes else f"{mf}: nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
