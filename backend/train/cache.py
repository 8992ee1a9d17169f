"""Feature cache for ISCN training: the frozen backbone runs once per training image, never per step.

Layout of a cache directory (all arrays are .npy, opened memory-mapped at train time):
  meta.json            {"size", "entries": [{"key", "set", "targets", "box_only"}], "sets": {name: license}}
  feats_s4/s8/s16/s32  (N, C, h, w) float16 backbone features of the letterboxed image
  labels               (N, S, S) uint8: 0 background, k = target k (1-based), 255 = never scored
  images               (N, S, S, 3) uint8 letterboxed RGB (for generated referring expressions)

Besides the photos themselves the cache holds "collages": two or three single-person training photos letterboxed
side by side into one square. Every real training set here labels one person per photo, so collages are the
cheapest way to show the decoder several people of whom exactly one is prompted (synthetic composites from
`python -m backend.synth` are used too when present).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from backend import data
from backend.dfimat.encoder import BACKBONE_CHANNELS, Letterbox, load_backbone
from backend.synth.mosaic import mosaic

IGNORE = 255


def _square(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    lb = Letterbox(image.shape[0], image.shape[1], size)
    img = lb.image_to_square(image, cv2.INTER_AREA)
    lab = lb.image_to_square(labels, cv2.INTER_NEAREST)
    return img, lab


def _item_square(item: data.Item, size: int) -> tuple[np.ndarray, np.ndarray, int, tuple[int, int]]:
    """Letterboxed image, relabelled target map (targets 1..n, ignore 255), target count, content (h, w)."""
    image = data.read_image(item.image_path)
    t = data.person_targets(item)
    labels = np.zeros(t.ignore.shape, np.uint8)
    labels[t.ignore] = IGNORE
    for m in t.small:
        labels[m] = IGNORE  # tiny people are neither target nor background
    for k, m in enumerate(t.masks):
        labels[m] = k + 1
    img, lab = _square(image, labels, size)
    return img, lab, len(t.masks), Letterbox(image.shape[0], image.shape[1], size).inner


def _collage(parts: list[tuple[np.ndarray, np.ndarray]], size: int, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """Place 2-3 (image, single-target labels) side by side, each scaled to its column, into one square."""
    n = len(parts)
    img = np.zeros((size, size, 3), np.uint8)
    lab = np.zeros((size, size), np.uint8)
    col = size // n
    for k, (im, lb) in enumerate(parts):
        h, w = im.shape[:2]
        s = min(col / w, size / h) * rng.uniform(0.75, 1.0)
        nw, nh = max(1, int(w * s)), max(1, int(h * s))
        x0 = k * col + (col - nw) // 2
        y0 = size - nh if rng.random() < 0.7 else (size - nh) // 2
        img[y0:y0 + nh, x0:x0 + nw] = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA)
        small = cv2.resize(lb, (nw, nh), interpolation=cv2.INTER_NEAREST)
        out = np.where(small == 1, k + 1, np.where(small == IGNORE, IGNORE, 0)).astype(np.uint8)
        lab[y0:y0 + nh, x0:x0 + nw] = out
    return img, lab


def build_cache(out: Path, items: list[data.Item], size: int = 384, collages: int = 300, seed: int = 0,
                batch: int = 8, log: Callable[[str], None] = print, mosaics: int = 0,
                keep_items: bool = True) -> Path:
    """Encode every item (+ collages, + `mosaics` 2 x 2 mosaics of items with targets) once; returns the cache dir.
    `keep_items=False` caches only the collages and mosaics. Skips work if a complete cache exists."""
    out = Path(out)
    if (out / "meta.json").is_file():
        log(f"cache exists: {out}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    backbone = load_backbone()
    single = [it for it in items if it.mask_kind == "single-person"]
    n_coll = collages if len(single) >= 3 else 0
    n_mos = mosaics if sum(not it.mask_kind == "all-people" for it in items) >= 4 else 0
    total = (len(items) if keep_items else 0) + n_coll + n_mos
    g = {k: size // s for k, s in (("s4", 4), ("s8", 8), ("s16", 16), ("s32", 32))}
    feats = {k: np.lib.format.open_memmap(out / f"feats_{k}.npy", "w+", np.float16, (total, c, g[k], g[k]))
             for k, c in BACKBONE_CHANNELS.items()}
    labels = np.lib.format.open_memmap(out / "labels.npy", "w+", np.uint8, (total, size, size))
    images = np.lib.format.open_memmap(out / "images.npy", "w+", np.uint8, (total, size, size, 3))
    entries: list[dict] = []
    squares: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    contents: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def produce():
        for it in items:
            img, lab, n, (h, w) = _item_square(it, size)
            if it.mask_kind == "single-person" and n == 1:
                squares[it.key] = (img[:h, :w], lab[:h, :w])
            if n_mos and n >= 1 and it.mask_kind != "all-people":
                contents[it.key] = (img[:h, :w], lab[:h, :w])
            if keep_items:
                yield img, lab, {"key": it.key, "set": it.set_name, "targets": n,
                                 "box_only": it.mask_kind == "all-people"}
        keys = list(squares)
        for c in range(n_coll if len(keys) >= 3 else 0):
            k = int(rng.integers(2, 4))
            pick = [keys[i] for i in rng.choice(len(keys), size=k, replace=False)]
            img, lab = _collage([squares[p] for p in pick], size, rng)
            n = int(max((v for v in np.unique(lab) if v != IGNORE), default=0))
            yield img, lab, {"key": f"collage/{c}:" + "+".join(pick), "set": "collage", "targets": n,
                             "box_only": False}
        keys = list(contents)
        for c in range(n_mos if len(keys) >= 4 else 0):
            pick = [keys[i] for i in rng.choice(len(keys), size=4, replace=False)]
            img, lab = mosaic([contents[p] for p in pick], size, rng)
            n = int(max((v for v in np.unique(lab) if v != IGNORE), default=0))
            yield img, lab, {"key": f"mosaic/{c}:" + "+".join(pick), "set": "mosaic", "targets": n,
                             "box_only": False}

    t0 = time.time()
    pending: list[tuple[np.ndarray, np.ndarray, dict]] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack([p[0] for p in pending])).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            f = backbone(x)
        base = len(entries)
        for j, (img, lab, meta) in enumerate(pending):
            for k in feats:
                feats[k][base + j] = f[k][j].numpy().astype(np.float16)
            labels[base + j] = lab
            images[base + j] = img
            entries.append(meta)
        pending.clear()
        log(f"cache {len(entries)}/{total} ({time.time() - t0:.0f}s)")

    for sample in produce():
        if sample[2]["targets"] == 0:
            continue
        pending.append(sample)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    n = len(entries)
    for arr in (*feats.values(), labels, images):
        arr.flush()
    licenses = {it.set_name: "" for it in items}
    (out / "meta.json").write_text(json.dumps({"size": size, "count": n, "entries": entries,
                                               "sets": sorted(licenses)}, indent=1))
    return out


def open_cache(path: Path) -> dict:
    """Memory-mapped view of a cache written by `build_cache` (rows beyond meta.count are unused)."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    n = meta["count"]
    arrays = {k: np.load(path / f"feats_{k}.npy", mmap_mode="r")[:n] for k in BACKBONE_CHANNELS}
    arrays["labels"] = np.load(path / "labels.npy", mmap_mode="r")[:n]
    arrays["images"] = np.load(path / "images.npy", mmap_mode="r")[:n]
    return {"meta": meta, **arrays}
