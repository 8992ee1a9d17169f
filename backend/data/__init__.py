"""Reading the person data sets (``../shared/data/<set>/`` and ``python -m backend.synth`` output).

Layout of one set (see the data README)::

    <set>/manifest.json      {name, source, license, mask_kind, note, items: [{id, image, instances, width, height,
                              persons, person_area_px, [alpha]}]}
    <set>/images/<id>.jpg|png
    <set>/instances/<id>.png  uint8; meaning depends on mask_kind (below)
    <set>/alpha/<id>_<k>.png  optional (synthetic sets): uint8 soft alpha of person k

``mask_kind``:

* ``instance`` — 0 background, 1..N one person each, 255 ignore (unlabelled);
* ``single-person`` — 1 is the one labelled person; other people in the photo are NOT labelled;
* ``all-people`` — 1 is every person together (not split), so the only target is "everyone".

Held out from all training: the real multi-person sets :data:`HELD_OUT_SETS` and the validation part of the
other sets from :func:`split`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "DataError",
    "DataSet",
    "Item",
    "Targets",
    "HELD_OUT_SETS",
    "MASK_KINDS",
    "load_set",
    "read_image",
    "read_instances",
    "read_alpha",
    "person_targets",
    "split",
    "training_items",
]

HELD_OUT_SETS = ("coco128-persons", "pennfudan-sample")
MASK_KINDS = ("instance", "single-person", "all-people")
IGNORE_VALUE = 255
# Sets whose photos contain people who carry no label: a prediction there may be "wrong" on a real person.
_PARTLY_LABELLED_SETS = ("pennfudan-sample",)
# DAVIS frames are every 3rd frame of three videos: neighbouring frames are near-duplicates, so they are split in
# blocks of this many listed frames of the same sequence, never frame by frame.
_DAVIS_BLOCK = 10


class DataError(ValueError):
    """A data set folder, manifest or file is missing or malformed."""


@dataclass(frozen=True)
class Item:
    """One photo of a set; paths are absolute."""

    set_name: str
    id: str
    image_path: Path
    instances_path: Path
    mask_kind: str
    width: int
    height: int
    persons: int = 0
    alpha_paths: tuple[tuple[int, Path], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.set_name}/{self.id}"


@dataclass(frozen=True)
class DataSet:
    name: str
    mask_kind: str
    license: str
    source: str
    note: str
    root: Path
    items: tuple[Item, ...]


@dataclass
class Targets:
    """The people of one photo that a user could ask for, plus what scoring must know about the rest.

    ``masks`` are the targets (each labelled person covering at least ``min_frac`` of the image), ``labels`` their
    instance values, ``small`` the masks of the smaller labelled people, ``ignore`` the pixels never scored.
    ``all_people`` is set when the single target is everyone together; ``unlabelled_people`` when the photo may show
    people without a label (single-person sets, Penn-Fudan), so predicted mass outside the labels is not
    necessarily an error. ``alphas`` holds a soft alpha per target where the set provides one (synthetic data).
    """

    masks: list[np.ndarray]
    labels: list[int]
    small: list[np.ndarray]
    ignore: np.ndarray
    all_people: bool = False
    unlabelled_people: bool = False
    alphas: list[np.ndarray | None] = field(default_factory=list)

    def others(self, i: int) -> np.ndarray:
        """Union of every labelled person except target ``i`` (small ones included)."""
        if not 0 <= i < len(self.masks):
            raise IndexError(f"target {i} out of range 0..{len(self.masks) - 1}")
        out = np.zeros_like(self.ignore)
        for j, mask in enumerate(self.masks):
            if j != i:
                out |= mask
        for mask in self.small:
            out |= mask
        return out

    def people(self) -> list[np.ndarray]:
        """All labelled people, targets first: the set to make referring expressions unambiguous against."""
        return list(self.masks) + list(self.small)


def _require(d: dict, key: str, where: str):
    if key not in d:
        raise DataError(f"{where}: missing key {key!r}")
    return d[key]


def _alpha_paths(root: Path, raw: dict, item_id: str) -> tuple[tuple[int, Path], ...]:
    found: dict[int, Path] = {}
    listed = raw.get("alpha")
    if isinstance(listed, dict):
        for k, rel in listed.items():
            found[int(k)] = root / rel
    elif isinstance(listed, list):
        for k, rel in enumerate(listed, start=1):
            if rel is not None:
                found[k] = root / rel
    alpha_dir = root / "alpha"
    if not found and alpha_dir.is_dir():
        pattern = re.compile(re.escape(item_id) + r"_(\d+)\.png$")
        for path in alpha_dir.glob(f"{item_id}_*.png"):
            m = pattern.match(path.name)
            if m:
                found[int(m.group(1))] = path
    return tuple(sorted(found.items()))


def load_set(root: Path | str) -> DataSet:
    """Read ``root/manifest.json``; raise :class:`DataError` naming what is wrong."""
    root = Path(root).resolve()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{root} is not a data set: no manifest.json there")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{manifest_path}: cannot read JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{manifest_path}: expected a JSON object")
    name = str(_require(manifest, "name", str(manifest_path)))
    mask_kind = _require(manifest, "mask_kind", str(manifest_path))
    if mask_kind not in MASK_KINDS:
        raise DataError(f"{manifest_path}: mask_kind {mask_kind!r} is not one of {MASK_KINDS}")
    raw_items = _require(manifest, "items", str(manifest_path))
    if not isinstance(raw_items, list):
        raise DataError(f"{manifest_path}: items must be a list")
    items = []
    for n, raw in enumerate(raw_items):
        where = f"{manifest_path} item {n}"
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected an object")
        item_id = str(_require(raw, "id", where))
        items.append(
            Item(
                set_name=name,
                id=item_id,
                image_path=root / str(_require(raw, "image", where)),
                instances_path=root / str(_require(raw, "instances", where)),
                mask_kind=mask_kind,
                width=int(_require(raw, "width", where)),
                height=int(_require(raw, "height", where)),
                persons=int(raw.get("persons", 0)),
                alpha_paths=_alpha_paths(root, raw, item_id),
            )
        )
    return DataSet(
        name=name,
        mask_kind=mask_kind,
        license=str(manifest.get("license", "")),
        source=str(manifest.get("source", "")),
        note=str(manifest.get("note", "")),
        root=root,
        items=tuple(items),
    )


def read_image(path: Path | str) -> np.ndarray:
    """The photo as H x W x 3 uint8 RGB (grayscale and alpha channels converted)."""
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"cannot read image {path}")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_instances(path: Path | str) -> np.ndarray:
    """The instance map as H x W uint8."""
    path = Path(path)
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DataError(f"cannot read instance map {path}")
    if labels.ndim == 3:
        labels = labels[..., 0]
    if labels.dtype != np.uint8:
        raise DataError(f"instance map {path} must be 8-bit, got {labels.dtype}")
    return labels


def read_alpha(path: Path | str) -> np.ndarray:
    """A soft alpha map as H x W float32 in [0, 1]."""
    alpha = read_instances(path)
    return alpha.astype(np.float32) / 255.0


def person_targets(item: Item, min_frac: float = 0.01, labels: np.ndarray | None = None) -> Targets:
    """Split an item's instance map into targets, small people and ignore pixels per its ``mask_kind``."""
    if labels is None:
        labels = read_instances(item.instances_path)
    if labels.shape != (item.height, item.width):
        raise DataError(
            f"{item.key}: instance map is {labels.shape[1]}x{labels.shape[0]}, manifest says {item.width}x{item.height}"
        )
    min_px = min_frac * labels.size
    ignore = labels == IGNORE_VALUE
    if item.mask_kind == "instance":
        values = [int(v) for v in np.unique(labels) if 0 < v < IGNORE_VALUE]
    else:
        values = [1] if np.any(labels == 1) else []
        # Anything other than 0/1 in a binary set is not a person label; never score it.
        ignore = ignore | (labels > 1)
    alpha_by_label = dict(item.alpha_paths)
    masks, kept, small, alphas = [], [], [], []
    for v in values:
        mask = labels == v
        if mask.sum() >= min_px:
            masks.append(mask)
            kept.append(v)
            alphas.append(read_alpha(alpha_by_label[v]) if v in alpha_by_label else None)
        else:
            small.append(mask)
    return Targets(
        masks=masks,
        labels=kept,
        small=small,
        ignore=ignore,
        all_people=item.mask_kind == "all-people",
        unlabelled_people=item.mask_kind == "single-person" or item.set_name in _PARTLY_LABELLED_SETS,
        alphas=alphas,
    )


def _split_group(item: Item) -> str:
    if item.set_name.startswith("davis"):
        sequence, _, frame = item.id.rpartition("_")
        if sequence and frame.isdigit():
            # Frames are every 3rd: block index over the listed frames of that sequence.
            return f"{item.set_name}/{sequence}/{int(frame) // (3 * _DAVIS_BLOCK)}"
    return item.key


def _unit_hash(text: str) -> float:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split(items: Sequence[Item], val_fraction: float = 0.1) -> tuple[list[Item], list[Item]]:
    """Deterministic train/validation split by a hash of each item's id (DAVIS: of its block of frames).

    The same item always lands on the same side, whatever else is in ``items``.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be within [0, 1], got {val_fraction}")
    train, val = [], []
    for item in items:
        (val if _unit_hash(_split_group(item)) < val_fraction else train).append(item)
    return train, val


def training_items(sets: Iterable[DataSet], val_fraction: float = 0.1) -> tuple[list[Item], list[Item]]:
    """Train and validation items of the given sets, with :data:`HELD_OUT_SETS` left out entirely."""
    pool = [item for s in sets if s.name not in HELD_OUT_SETS for item in s.items]
    return split(pool, val_fraction)
