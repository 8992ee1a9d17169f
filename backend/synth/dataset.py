"""Fill a folder with composites in the ``../shared/data`` layout (+ ``alpha/`` and ``descriptions.json``)."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from backend.synth.cutouts import (
    CUTOUT_SET,
    DAVIS_SCENE_SEQUENCES,
    cutout_items,
    load_cutout,
    load_scene,
    scene_items,
)
from backend.synth.errors import CutoutError, GenerationError, RejectedComposite, SceneError, SynthError
from backend.synth.generate import MODES, Composite, compose_composite

# davis16-person (parkour) is usable with --sources but not a default: its person is mid-jump or crouching on walls
# in most frames, so the "ground line" read from their feet puts pasted people on railings and walls.
DEFAULT_SOURCES = ("ccp-fashion", "humanseg300-removebg")
PASTE_COUNTS = (1, 2, 3)
PASTE_WEIGHTS = (0.5, 0.35, 0.15)
OUTPUT_DIRS = ("images", "instances", "alpha")


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cannot write {path}")


def write_composite(out: Path, item_id: str, comp: Composite, jpeg_quality: int = 92) -> dict:
    """Write one composite's files; return its manifest entry."""
    h, w = comp.labels.shape
    image_rel, inst_rel = f"images/{item_id}.jpg", f"instances/{item_id}.png"
    bgr = cv2.cvtColor(comp.image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(out / image_rel), bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
        raise OSError(f"cannot write {out / image_rel}")
    _write_png(out / inst_rel, comp.labels)
    alpha_rel = []
    for k, alpha in enumerate(comp.alphas, start=1):
        rel = f"alpha/{item_id}_{k}.png"
        _write_png(out / rel, np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8))
        alpha_rel.append(rel)
    return {
        "id": item_id,
        "image": image_rel,
        "instances": inst_rel,
        "width": w,
        "height": h,
        "persons": len(comp.alphas),
        "person_area_px": [int((comp.labels == k).sum()) for k in range(1, len(comp.alphas) + 1)],
        "alpha": alpha_rel,
        "scene": comp.scene,
        "ignore_px": int((comp.labels == 255).sum()),
        "person_info": comp.persons,
        "placement": comp.extra,
    }


def _staging_dir(out: Path, overwrite: bool) -> Path:
    """A fresh ``<out>.partial`` folder to write into; ``out`` itself is only replaced once everything is written."""
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            # --overwrite replaces a data set, never an arbitrary folder someone pointed --out at by mistake.
            raise GenerationError(f"{out} is not empty and holds no data set; choose another --out")
        if not overwrite:
            raise GenerationError(
                f"{out} already holds a data set; pass overwrite=True (--overwrite) to replace it"
            )
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    for sub in OUTPUT_DIRS:
        (staging / sub).mkdir(parents=True)
    return staging


def _publish(staging: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


def generate_set(
    out: Path,
    count: int,
    seed: int,
    mode: str,
    data_root: Path,
    sources: Sequence[str] = DEFAULT_SOURCES,
    max_side: int = 640,
    max_attempts: int = 60,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    instances: int | None = None,
    bystander_dir: Path | None = None,
) -> dict:
    """Generate ``count`` composites into ``out``; returns the manifest (also written to ``out/manifest.json``).

    With ``instances``, stop as soon as the labelled persons reach that number (``count`` is then an upper bound):
    this is how two modes are compared on the same number of instances, as in the paper's Tab. 7.
    With ``bystander_dir``, unlabelled people in single-person scene photos are detected (mediapipe, cached in that
    folder) and marked ignore (255).
    """
    if mode not in MODES:
        raise GenerationError(f"mode must be one of {MODES}, got {mode!r}")
    if count < 1:
        raise GenerationError(f"count must be >= 1, got {count}")
    if instances is not None and instances < 1:
        raise GenerationError(f"instances must be >= 1, got {instances}")
    if max_side < 64:
        raise GenerationError(f"max_side must be >= 64, got {max_side}")
    out = Path(out)
    cut_pool, cut_license = cutout_items(data_root)
    scenes, licenses = scene_items(data_root, sources)
    licenses.setdefault(CUTOUT_SET, cut_license)
    staging = _staging_dir(out, overwrite)
    unusable_scenes: set[str] = set()
    entries, texts = [], {}
    rejections: dict[str, int] = {}
    started = time.monotonic()
    labelled = 0
    for index in range(count):
        if instances is not None and labelled >= instances:
            break
        item_id = f"synth-{mode}-s{seed}-{index:05d}"
        comp = None
        for attempt in range(max_attempts):
            pick = np.random.default_rng([seed, index, attempt, 0])
            place = np.random.default_rng([seed, index, attempt, 1])
            scene_item = scenes[int(pick.integers(len(scenes)))]
            n_paste = int(pick.choice(PASTE_COUNTS, p=PASTE_WEIGHTS))
            candidates = pick.permutation(len(cut_pool))[: n_paste + 4]
            if scene_item.key in unusable_scenes:
                rejections["scene unusable"] = rejections.get("scene unusable", 0) + 1
                continue
            cutouts = []
            for c in candidates:
                if len(cutouts) == n_paste:
                    break
                if cut_pool[c].key == scene_item.key:
                    continue  # the same person twice in one photo
                try:
                    cutouts.append(load_cutout(cut_pool[c]))
                except CutoutError:
                    continue
            if len(cutouts) < n_paste:
                rejections["not enough cutouts"] = rejections.get("not enough cutouts", 0) + 1
                continue
            try:
                comp = compose_composite(
                    load_scene(scene_item, max_side, bystander_dir), cutouts, mode, place
                )
                break
            except SceneError:
                unusable_scenes.add(scene_item.key)
                rejections["scene unusable"] = rejections.get("scene unusable", 0) + 1
            except RejectedComposite as exc:
                for reason in exc.reasons:
                    key = re.sub(r"[\d.]+ ?(%|px)?", "#", reason.rsplit(": ", 1)[-1])
                    rejections[key] = rejections.get(key, 0) + 1
        if comp is None:
            raise GenerationError(f"no plausible composite for index {index} in {max_attempts} attempts")
        entries.append(write_composite(staging, item_id, comp))
        labelled += len(comp.alphas)
        texts[item_id] = comp.descriptions
        if progress and (index + 1) % 50 == 0:
            progress(f"{index + 1}/{count} composites, {time.monotonic() - started:.0f} s")

    manifest = {
        "name": out.name,
        "source": (
            f"synthetic composites made by `python -m backend.synth --mode {mode} --seed {seed} --count {count}"
            + (f" --instances {instances}" if instances else "")
            + "`: "
            f"person cutouts from {CUTOUT_SET} (train split) pasted into train-split scene photos of "
            f"{', '.join(sources)}"
        ),
        "license": "derived from the source photos; their terms apply: "
        + " | ".join(f"{k}: {v}" for k, v in sorted(licenses.items())),
        "mask_kind": "instance",
        "note": (
            "0 background, 1..N persons, 255 ignore (all-people scene masks that are not split per person, and "
            "detected unlabelled bystanders when enabled; the detector misses some, mostly tiny ones). "
            "Person 1 is the scene's own labelled person. alpha/<id>_<k>.png are SYNTHETIC soft alphas: feathered edges of pasted cutouts (alpha "
            "'feathered') or the scene's binary mask (alpha 'binary'), both occluded by nearer people; "
            "instances/ is alpha >= 0.5 of the nearest person. descriptions.json: per item, per person, text "
            "expressions that pick that person only."
        ),
        "synthetic": True,
        # Scene photos of single-person sets can show unlabelled bystanders, which are 0 here, not 255.
        "partly_labelled": bystander_dir is None
        and any(k in ("ccp-fashion", "davis16-person") for k in sources),
        "bystanders": "mediapipe selfie segmentation on tiles, marked 255"
        if bystander_dir is not None
        else "off",
        "alpha_kind": "synthetic",
        "generator": {
            "mode": mode,
            "seed": seed,
            "count": count,
            "instances_target": instances,
            "labelled_persons": labelled,
            "max_side": max_side,
            "sources": list(sources),
            "cutout_set": CUTOUT_SET,
            "davis_sequences": list(DAVIS_SCENE_SEQUENCES),
            "split_rule": "backend.data.split (train part only)",
            "rejections": rejections,
            "seconds": round(time.monotonic() - started, 1),
        },
        "items": entries,
    }
    (staging / "descriptions.json").write_text(json.dumps({"schema": 1, "items": texts}, indent=1))
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    # Until here a failure leaves any earlier set in ``out`` untouched (and a stale .partial folder, never read).
    _publish(staging, out)
    return manifest


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["DEFAULT_SOURCES", "generate_set", "write_composite", "SynthError"]
