"""Find unlabelled bystanders in single-person scene photos, so composites can mark them ignore (255).

ccp-fashion street photos often show passers-by behind the labelled person; in a composite they would otherwise be
"background" and teach the model that real people are not people. mediapipe's bundled selfie-segmentation model
(offline, see notes/offline-models.md) is run on overlapping half-size tiles, because at its 256 px input a
whole-frame pass misses small background people. Over-marking (a chair taken for a person) only removes some
background pixels from the loss, so the rule leans towards marking.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

Segmenter = Callable[[np.ndarray], np.ndarray]

PROB_THRESHOLD = 0.7
# Pixels near the labelled person belong to them (hair, bags, the model's blurry edge), not to someone else.
LABELLED_MARGIN_PX = 15
MIN_AREA_FRAC = 0.0004
MIN_ASPECT = 1.2  # standing people are taller than wide; wide blobs are mostly cars, benches, shadows
# Passers-by stand behind the photographed person, so they look smaller; bigger blobs are hedges and walls.
MAX_HEIGHT_VS_LABELLED = 0.9
MAX_AREA_VS_LABELLED = 0.5


def mediapipe_segmenter() -> Segmenter:
    """Person probability (H×W float32) for an RGB tile from mediapipe's general selfie-segmentation model."""
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise RuntimeError("bystander detection needs mediapipe 0.10.21 (or pass bystanders=False)") from exc
    model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def run(tile: np.ndarray) -> np.ndarray:
        return model.process(np.ascontiguousarray(tile)).segmentation_mask.astype(np.float32)

    return run


def person_probability(image: np.ndarray, segmenter: Segmenter) -> np.ndarray:
    """Max over overlapping square tiles (side = half the short side, stride half a tile) of the person probability."""
    h, w = image.shape[:2]
    side = max(16, min(h, w) // 2)
    prob = np.zeros((h, w), np.float32)
    ys = sorted(set(list(range(0, max(1, h - side + 1), side // 2)) + [max(0, h - side)]))
    xs = sorted(set(list(range(0, max(1, w - side + 1), side // 2)) + [max(0, w - side)]))
    for y in ys:
        for x in xs:
            tile = image[y : y + side, x : x + side]
            p = segmenter(tile)
            if p.shape != tile.shape[:2]:
                p = cv2.resize(p, (tile.shape[1], tile.shape[0]), interpolation=cv2.INTER_LINEAR)
            np.maximum(prob[y : y + side, x : x + side], p, out=prob[y : y + side, x : x + side])
    return prob


def bystander_components(prob: np.ndarray, labelled: np.ndarray) -> list[np.ndarray]:
    """Person-like blobs of ``prob`` away from the labelled person: one boolean mask per bystander."""
    h, w = labelled.shape
    k = 2 * LABELLED_MARGIN_PX + 1
    near = cv2.dilate(labelled.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    candidates = ((prob > PROB_THRESHOLD) & ~near).astype(np.uint8)
    rows = np.flatnonzero(labelled.any(axis=1))
    ref_h = float(rows[-1] - rows[0] + 1) if rows.size else float(h)
    ref_area = float(labelled.sum()) if rows.size else float(h * w)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(candidates, connectivity=8)
    found = []
    for c in range(1, n):
        _, top, bw, bh, area = stats[c]
        if (
            top > 0  # blobs hanging from the top edge are foliage and facades; passers-by are seen whole
            and area >= MIN_AREA_FRAC * h * w
            and bh >= MIN_ASPECT * bw
            and bh <= MAX_HEIGHT_VS_LABELLED * ref_h
            and area <= MAX_AREA_VS_LABELLED * ref_area
        ):
            found.append(comp == c)
    return found


def find_bystanders(
    image: np.ndarray, labelled: np.ndarray, segmenter: Segmenter, cache_path: Path | None = None
) -> list[np.ndarray]:
    """Bystander masks for a photo; with ``cache_path`` the union is stored once (as PNG) and read back later."""
    if cache_path is not None and cache_path.is_file():
        union = cv2.imread(str(cache_path), cv2.IMREAD_GRAYSCALE)
        if union is not None and union.shape == labelled.shape:
            n, comp = cv2.connectedComponents((union > 0).astype(np.uint8), connectivity=8)
            return [comp == c for c in range(1, n)]
    found = bystander_components(person_probability(image, segmenter), labelled)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        union = np.zeros(labelled.shape, np.uint8)
        for m in found:
            union[m] = 255
        cv2.imwrite(str(cache_path), union)
    return found
