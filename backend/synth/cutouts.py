"""Person cutouts and scene photos read from the ``../shared/data`` layout.

Cutouts come from the ccp-fashion *train* split only: validation items are evaluation data and must never end up
pasted into training composites. Scenes keep their labelled people as layers so that pasted people can stand in
front of or behind them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from backend.data import HELD_OUT_SETS, DataError, DataSet, Item, load_set, split
from backend.synth.bystanders import Segmenter, find_bystanders, mediapipe_segmenter
from backend.synth.errors import CutoutError, SceneError

CUTOUT_SET = "ccp-fashion"
# davis16 breakdance / dance-twirl frames show crowds of spectators who are not labelled: pasting labelled people
# next to them would teach the model that real people are background.
DAVIS_SCENE_SEQUENCES = ("parkour",)
IGNORE = 255


def default_data_root() -> Path:
    """``$DFIMAT_DATA`` if set, else ``../shared/data`` next to the repository."""
    env = os.environ.get("DFIMAT_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_source_set(root: Path) -> DataSet:
    """Read one set with the project's reader; refuses the held-out evaluation sets."""
    root = Path(root)
    if root.name in HELD_OUT_SETS:
        raise SceneError(f"{root.name} is a held-out evaluation set and must not be used for synthesis")
    try:
        dataset = load_set(root)
    except DataError as exc:
        raise SceneError(str(exc)) from exc
    if dataset.name in HELD_OUT_SETS:
        raise SceneError(f"{dataset.name} is a held-out evaluation set and must not be used for synthesis")
    return dataset


def train_items(items: Sequence[Item]) -> list[Item]:
    """The train part of ``items`` by the project's one split rule (validation items are never pasted)."""
    train, _ = split(items)
    return train


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SceneError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_labels(path: Path, shape: tuple[int, int]) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise SceneError(f"cannot read mask {path}")
    if labels.ndim == 3:
        labels = labels[..., 0]
    if labels.shape != shape:
        raise SceneError(f"mask {path} is {labels.shape}, image is {shape}")
    return labels.astype(np.uint8)


@dataclass
class Cutout:
    """One person cropped to their mask's bounding box; ``mask`` is float in [0, 1], feet at the bottom row."""

    source: str
    rgb: np.ndarray
    mask: np.ndarray

    @property
    def height(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]


def make_cutout(rgb: np.ndarray, mask: np.ndarray, source: str, border: int = 2) -> Cutout:
    """Crop a full-body person from a photo.

    Raises ``CutoutError`` for an empty mask or a person cut off by the left, right or bottom border: the ground-line
    placement needs visible feet and a whole silhouette.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != mask.shape[:2]:
        raise CutoutError(f"{source}: image {rgb.shape} and mask {mask.shape} do not match")
    person = mask > 0.5 if mask.dtype != bool else mask
    if not person.any():
        raise CutoutError(f"{source}: the cutout mask is empty")
    rows = np.flatnonzero(person.any(axis=1))
    cols = np.flatnonzero(person.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h, w = person.shape
    if x0 < border or x1 > w - border or y1 > h - border:
        raise CutoutError(f"{source}: the person touches the photo border (not a full-body cutout)")
    if (y1 - y0) < 32:
        raise CutoutError(f"{source}: the person is only {y1 - y0} px tall")
    soft = mask.astype(np.float32) if mask.dtype != bool else person.astype(np.float32)
    return Cutout(source, np.ascontiguousarray(rgb[y0:y1, x0:x1]), np.ascontiguousarray(soft[y0:y1, x0:x1]))


@lru_cache(maxsize=256)
def load_cutout(item: Item) -> Cutout:
    """The labelled person of a single-person item as a cutout (cached: composites reuse cutouts)."""
    rgb = read_rgb(item.image_path)
    labels = read_labels(item.instances_path, rgb.shape[:2])
    return make_cutout(rgb, (labels == 1).astype(np.float32), item.key)


@dataclass
class ScenePerson:
    """A person already in the scene photo; ``ignore`` people (e.g. an all-people mask) become label 255.

    ``origin`` is ``scene`` for labelled masks and ``bystander`` for detected unlabelled people, who are ignore
    layers that neither fix the ground line nor count for the occlusion rules.
    """

    mask: np.ndarray
    ignore: bool = False
    origin: str = "scene"


@dataclass
class Scene:
    source: str
    image: np.ndarray
    people: list[ScenePerson]
    unlabelled_note: str = ""


def make_scene(image: np.ndarray, labels: np.ndarray, mask_kind: str, source: str) -> Scene:
    """Turn a photo and its mask into scene layers according to the set's ``mask_kind``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != labels.shape:
        raise SceneError(f"{source}: image {image.shape} and mask {labels.shape} do not match")
    people: list[ScenePerson] = []
    if mask_kind == "single-person":
        people.append(ScenePerson(labels == 1))
    elif mask_kind == "all-people":
        # Everyone is one blob: which pixels belong to which person is unknown, so the blob is never a target.
        people.append(ScenePerson(labels == 1, ignore=True))
    elif mask_kind == "instance":
        for value in sorted(set(np.unique(labels).tolist()) - {0, IGNORE}):
            people.append(ScenePerson(labels == value))
        if (labels == IGNORE).any():
            people.append(ScenePerson(labels == IGNORE, ignore=True))
    else:
        raise SceneError(f"{source}: unknown mask_kind {mask_kind!r}")
    people = [p for p in people if p.mask.any()]
    if not people:
        raise SceneError(f"{source}: the scene has no labelled person")
    return Scene(source, image, people)


def resize_scene(scene: Scene, max_side: int) -> Scene:
    h, w = scene.image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return scene
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(scene.image, size, interpolation=cv2.INTER_AREA)
    people = []
    for p in scene.people:
        m = cv2.resize(p.mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
        if m.any():
            people.append(ScenePerson(m, p.ignore, p.origin))
    if not people:
        raise SceneError(f"{scene.source}: people vanish when resized to {size}")
    return Scene(scene.source, image, people, scene.unlabelled_note)


_segmenter: Segmenter | None = None


def _bystander_segmenter() -> Segmenter:
    global _segmenter
    if _segmenter is None:
        _segmenter = mediapipe_segmenter()
    return _segmenter


@lru_cache(maxsize=64)
def load_scene(item: Item, max_side: int, bystander_dir: Path | None = None) -> Scene:
    """A scene photo resized to ``max_side``; with ``bystander_dir``, unlabelled people in single-person photos are
    added as ignore layers (detections cached as PNG under that folder)."""
    rgb = read_rgb(item.image_path)
    labels = read_labels(item.instances_path, rgb.shape[:2])
    scene = make_scene(rgb, labels, item.mask_kind, item.key)
    if bystander_dir is not None and item.mask_kind == "single-person":
        h, w = labels.shape
        cache = Path(bystander_dir) / item.set_name / f"{item.id}_{w}x{h}.png"
        for mask in find_bystanders(rgb, labels == 1, _bystander_segmenter(), cache):
            scene.people.append(ScenePerson(mask, ignore=True, origin="bystander"))
    return resize_scene(scene, max_side)


def scene_items(data_root: Path, sources: Sequence[str]) -> tuple[list[Item], dict[str, str]]:
    """Train-split scene photos from the named sets and each set's license note."""
    items: list[Item] = []
    licenses: dict[str, str] = {}
    for name in sources:
        if name in HELD_OUT_SETS:
            raise SceneError(f"{name} is a held-out evaluation set and must not be used for synthesis")
        src = load_source_set(Path(data_root) / name)
        licenses[name] = src.license
        chosen = list(src.items)
        if name == "davis16-person":
            chosen = [it for it in chosen if it.id.rsplit("_", 1)[0] in DAVIS_SCENE_SEQUENCES]
        items.extend(train_items(chosen))
    if not items:
        raise SceneError(f"no scene photos in {list(sources)} under {data_root}")
    return items, licenses


def cutout_items(data_root: Path) -> tuple[list[Item], str]:
    """ccp-fashion train items (the cutout pool) and the set's license note."""
    src = load_source_set(Path(data_root) / CUTOUT_SET)
    train = train_items(src.items)
    if not train:
        raise CutoutError(f"no {CUTOUT_SET} train items under {data_root}")
    return train, src.license
