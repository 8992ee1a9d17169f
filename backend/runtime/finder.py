"""Every person in a photo, each with their own mask: NanoDet boxes + MoveNet multipose, masks from BlazePose-full.

    people = find_people(image)                  # H×W×3 uint8 RGB
    for p in people:
        p.box, p.score, p.keypoints, p.source    # image pixels; keypoints (17, 3) x, y, score or None
        alpha = p.full_mask(*image.shape[:2])    # float32 H×W, zero outside the person's rect

Steps (`PeopleFinder.find`):
1. NanoDet person boxes and MoveNet people (boxes + keypoints) on the whole image.
2. Merge the two lists: a NanoDet box and a MoveNet person are one person when their boxes overlap (IoU) or most of
   MoveNet's confident keypoints fall inside the NanoDet box; source "both".
3. BlazePose-full segments the person centred in a square crop around each box: that person's own mask.
4. Finds whose masks are the same person (mask IoU) are merged; finds with an almost empty mask are dropped.
5. Contested pixels (two masks ≥ 0.5) go to one person only: the higher probability minus a distance penalty to the
   person's skeleton (keypoints) or box, so a neighbour's mask bleeding onto you loses to your own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

import numpy as np

from backend.runtime.person_nets import SKELETON, BlazePoseSeg, Boxes, MoveNet, NanoDet, nms

SOURCES = ("nanodet", "movenet", "both")
# Corner crops for small people: 60 % of each side, so any person up to 20 % of the width fits one of them whole.
TILE_FRACTION = 0.6
# A corner crop's box is a new person only when it overlaps no whole-image box this much (IoU) ...
TILE_NEW_IOU = 0.3
# ... and lies less than this share inside every one of them (a part of a person found whole is not a new person).
TILE_NEW_INSIDE = 0.7


@dataclass
class Person:
    """One found person.

    ``box``: x0, y0, x1, y1 (image px, float). ``score``: detector score (the higher of the two when both found it).
    ``keypoints``: (17, 3) float32 x, y, score in image px (COCO order), or None when only NanoDet found the person.
    ``mask``: float32 (y1 − y0, x1 − x0) probabilities inside ``rect`` (integer x0, y0, x1, y1), or None;
    after `resolve_overlaps` no pixel is ≥ 0.5 in two people's masks. ``source``: one of `SOURCES`.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = None
    mask: np.ndarray | None = None
    rect: tuple[int, int, int, int] = (0, 0, 0, 0)
    source: str = "nanodet"
    flag: float = field(default=0.0, repr=False)  # BlazePose's presence score on the person's crop

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """The mask pasted into an H × W float32 image (zeros where the person has no mask)."""
        out = np.zeros((height, width), np.float32)
        if self.mask is not None:
            x0, y0, x1, y1 = self.rect
            out[y0:y1, x0:x1] = self.mask
        return out

    def binary(self, threshold: float = 0.5) -> np.ndarray:
        """The mask inside ``rect`` as bool."""
        return np.zeros((0, 0), bool) if self.mask is None else self.mask >= threshold


@dataclass(frozen=True)
class FinderOptions:
    """Thresholds, chosen on the "tune" split (pennfudan-sample + the coco128-persons photos at even manifest
    positions) by tools/person_models/measure.py --sweep; results on the "check" split (coco128-persons, odd
    positions) and on both sets are in models/person/MODEL_CARD.md."""

    nanodet_score: float = 0.5  # a NanoDet box this sure is a person on its own
    # Boxes between nanodet_low_score and nanodet_score count when a MoveNet pose agrees or, alone, when BlazePose's
    # presence score on the box's crop reaches nanodet_only_flag (equal scores: no such band).
    nanodet_low_score: float = 0.4
    movenet_score: float = 0.2
    merge_iou: float = 0.5  # a NanoDet box and a MoveNet box this alike are one person
    merge_keypoints: float = 0.7  # ... or this share of MoveNet's confident keypoints lies inside the NanoDet box
    keypoint_score: float = 0.3  # keypoints below this are not used for merging or distances
    duplicate_mask_iou: float = 0.6  # two finds whose masks overlap this much are one person
    # ... unless each carries its own MoveNet pose: two skeletons are two people, however much BlazePose's masks of
    # them overlap (side by side, BlazePose's crop around one segments both); `resolve_overlaps` splits the masks.
    keep_two_poses: bool = False
    min_mask_fill: float = 0.0  # share of its box a find's mask (≥ 0.5) must cover, else it is dropped
    # Most of NanoDet's false person boxes are things BlazePose sees no person in (presence median 0.16 on false
    # finds, 0.99 on right ones, tune split at score >= 0.3). With the band 0.4-0.5 and 0.97: tune split 80.0 ->
    # 82.5 % found, 0.10 -> 0.18 false / image; check split 60.8 % either way (0.07 -> 0.10 false / image).
    nanodet_only_flag: float = 0.97
    distance_weight: float = 0.5  # per person height of distance to the skeleton / box, subtracted in contests
    crop_scale: float = 1.25  # BlazePose's square crop: this × the box's long side
    masks: bool = True


class PeopleFinder:
    """The three networks behind one call; sessions are shared per process (`person_nets.session`)."""

    def __init__(self, options: FinderOptions | None = None, threads: int | None = None, cuda: bool = False) -> None:
        self.options = options or FinderOptions()
        self.nanodet = NanoDet(min(self.options.nanodet_score, self.options.nanodet_low_score), threads=threads,
                               cuda=cuda)
        self.movenet = MoveNet(self.options.movenet_score, threads=threads, cuda=cuda)
        self.blazepose = BlazePoseSeg(self.options.crop_scale, threads=threads, cuda=cuda)

    def find(self, image: np.ndarray, tiles: bool = False) -> list[Person]:
        """People in an H×W×3 uint8 RGB image, highest score first, with non-overlapping masks. ``tiles``: NanoDet
        also looks in the four corner crops (`corner_crops`), where small people are bigger to it (four more
        NanoDet runs, ~160 ms at 1 MP on one thread)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.shape} {image.dtype}")
        o = self.options
        boxes = self.nanodet(image)
        if tiles:
            boxes = with_corner_boxes(boxes, image, self.nanodet)
        poses = self.movenet(image)
        people = merge_detections(boxes.boxes, boxes.scores, poses, o)
        if not o.masks or not people:
            return people
        for p, m in zip(people, self.blazepose(image, np.array([p.box for p in people], np.float32)), strict=True):
            p.mask, p.rect, p.flag = m.mask, m.rect, m.flag
        people = keep_plausible(people, o)
        people = merge_duplicates(people, o.duplicate_mask_iou, o.keep_two_poses)
        resolve_overlaps(people, o)
        return people


def corner_crops(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """The four overlapping corner crops (x0, y0, x1, y1) of an h × w image, `TILE_FRACTION` of each side."""
    th, tw = int(h * TILE_FRACTION), int(w * TILE_FRACTION)
    return [(x0, y0, x0 + tw, y0 + th) for y0 in (0, h - th) for x0 in (0, w - tw)]


def with_corner_boxes(found: Boxes, image: np.ndarray, detect: NanoDet) -> Boxes:
    """``found`` (the whole image's boxes) and the new people ``detect`` finds in the corner crops: a crop's box that
    touches one of the crop's inner edges is a person the crop cuts (the whole image or another crop holds them), and
    one that overlaps a whole-image box is someone already found (`TILE_NEW_IOU`, `TILE_NEW_INSIDE`); the rest go
    through one non-maximum suppression among themselves, as the crops overlap."""
    h, w = image.shape[:2]
    boxes, scores = [], []
    for x0, y0, x1, y1 in corner_crops(h, w):
        crop = detect(np.ascontiguousarray(image[y0:y1, x0:x1]))
        b = crop.boxes
        cut = ((x0 > 0) & (b[:, 0] <= 1)) | ((x1 < w) & (b[:, 2] >= x1 - x0 - 1)) \
            | ((y0 > 0) & (b[:, 1] <= 1)) | ((y1 < h) & (b[:, 3] >= y1 - y0 - 1))
        boxes.append(b[~cut] + np.array([x0, y0, x0, y0], np.float32))
        scores.append(crop.scores[~cut])
    extra = np.concatenate(boxes).astype(np.float32).reshape(-1, 4)
    extra_scores = np.concatenate(scores).astype(np.float32)
    if len(extra) and len(found.boxes):
        new = (box_iou(extra, found.boxes).max(axis=1) < TILE_NEW_IOU) \
            & (inside_share(extra, found.boxes).max(axis=1) < TILE_NEW_INSIDE)
        extra, extra_scores = extra[new], extra_scores[new]
    keep = nms(extra, extra_scores, detect.nms_iou)
    return Boxes(np.concatenate([found.boxes.reshape(-1, 4), extra[keep]]).astype(np.float32),
                 np.concatenate([found.scores, extra_scores[keep]]).astype(np.float32))


def _overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, M) intersection areas of boxes a (N, 4) and b (M, 4), x0, y0, x1, y1, and the two boxes' areas."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    return inter, np.prod(a[:, 2:] - a[:, :2], axis=1), np.prod(b[:, 2:] - b[:, :2], axis=1)


def inside_share(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) share of each box of ``a`` that lies inside each box of ``b``."""
    inter, area_a, _ = _overlaps(a, b)
    return inter / np.maximum(area_a[:, None], 1e-6)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N, 4) and b (M, 4), x0, y0, x1, y1."""
    inter, area_a, area_b = _overlaps(a, b)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


def keypoints_inside(keypoints: np.ndarray, box: np.ndarray, min_score: float) -> float:
    """Share of the confident keypoints (score ≥ min_score) inside ``box``; 0 when none is confident."""
    kp = keypoints[keypoints[:, 2] >= min_score]
    if len(kp) == 0:
        return 0.0
    inside = (kp[:, 0] >= box[0]) & (kp[:, 0] <= box[2]) & (kp[:, 1] >= box[1]) & (kp[:, 1] <= box[3])
    return float(inside.mean())


def merge_detections(boxes: np.ndarray, scores: np.ndarray, poses: list, o: FinderOptions) -> list[Person]:
    """NanoDet boxes and MoveNet poses → people; a pair that is one person keeps NanoDet's box (tighter on the
    held-out photos) and MoveNet's keypoints. Greedy by affinity, each detection used once."""
    pose_boxes = np.array([p.box for p in poses], np.float32).reshape(-1, 4)
    iou = box_iou(boxes, pose_boxes)
    pairs = []
    for i in range(len(boxes)):
        for j, pose in enumerate(poses):
            inside = keypoints_inside(pose.keypoints, boxes[i], o.keypoint_score)
            # A keypoint match alone needs some overlap too: a small box inside a big one holds its keypoints.
            if iou[i, j] >= o.merge_iou or (inside >= o.merge_keypoints and iou[i, j] >= 0.3):
                pairs.append((iou[i, j] + inside, i, j))
    used_i, used_j, people = set(), set(), []
    for _, i, j in sorted(pairs, reverse=True):
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        people.append(Person(tuple(float(v) for v in boxes[i]), max(float(scores[i]), poses[j].score),
                             poses[j].keypoints, source="both"))
    for i in range(len(boxes)):
        if i not in used_i:
            people.append(Person(tuple(float(v) for v in boxes[i]), float(scores[i]), None, source="nanodet"))
    for j, pose in enumerate(poses):
        if j not in used_j:
            people.append(Person(tuple(float(v) for v in pose.box), pose.score, pose.keypoints, source="movenet"))
    people.sort(key=lambda p: -p.score)
    return people


def mask_fill(p: Person) -> float:
    """Share of the person's box covered by their mask (≥ 0.5)."""
    if p.mask is None:
        return 0.0
    x0, y0, x1, y1 = (int(round(v)) for v in p.box)
    rx0, ry0, rx1, ry1 = p.rect
    sub = p.mask[max(y0 - ry0, 0):max(y1 - ry0, 0), max(x0 - rx0, 0):max(x1 - rx0, 0)]
    area = max((x1 - x0) * (y1 - y0), 1)
    return float((sub >= 0.5).sum()) / area


def keep_plausible(people: list[Person], o: FinderOptions) -> list[Person]:
    """Drop finds whose mask is almost empty in their box, and unsure NanoDet-only finds (score below
    ``nanodet_score``) BlazePose sees no person in."""
    return [p for p in people if mask_fill(p) >= o.min_mask_fill
            and (p.source != "nanodet" or p.score >= o.nanodet_score or p.flag >= o.nanodet_only_flag)]


def _overlap_window(a: Person, b: Person) -> tuple[int, int, int, int] | None:
    x0, y0 = max(a.rect[0], b.rect[0]), max(a.rect[1], b.rect[1])
    x1, y1 = min(a.rect[2], b.rect[2]), min(a.rect[3], b.rect[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _window(p: Person, win: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = win
    return p.mask[y0 - p.rect[1]:y1 - p.rect[1], x0 - p.rect[0]:x1 - p.rect[0]]


def mask_iou(a: Person, b: Person) -> float:
    """IoU of two people's binary masks (≥ 0.5)."""
    if a.mask is None or b.mask is None:
        return 0.0
    win = _overlap_window(a, b)
    inter = 0 if win is None else int(((_window(a, win) >= 0.5) & (_window(b, win) >= 0.5)).sum())
    union = int(a.binary().sum()) + int(b.binary().sum()) - inter
    return inter / union if union else 0.0


def merge_duplicates(people: list[Person], min_iou: float, keep_two_poses: bool = False) -> list[Person]:
    """Drop a find whose mask is the same person as a higher-scored find's (NanoDet and MoveNet boxes of one person
    that did not overlap enough to merge, e.g. a box cut at the knees). The kept find takes the keypoints it lacks.
    With ``keep_two_poses``, two finds that each carry a MoveNet pose are never one person."""
    kept: list[Person] = []
    for p in people:  # highest score first
        twin = next((k for k in kept if mask_iou(k, p) >= min_iou
                     and not (keep_two_poses and k.keypoints is not None and p.keypoints is not None)), None)
        if twin is None:
            kept.append(p)
            continue
        if twin.keypoints is None and p.keypoints is not None:
            twin.keypoints = p.keypoints
        if twin.source != p.source:
            twin.source = "both"
    return kept


def distance_map(p: Person, win: tuple[int, int, int, int], min_score: float) -> np.ndarray:
    """Distance (in person heights, ≤ 1) of each window pixel to the person's skeleton, or to their box when they
    have no confident limb. Contested pixels near your own limbs are yours."""
    x0, y0, x1, y1 = win
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    height = max(p.box[3] - p.box[1], 1.0)
    best = None
    if p.keypoints is not None:
        kp = p.keypoints
        for a, b in SKELETON:
            if kp[a, 2] < min_score or kp[b, 2] < min_score:
                continue
            ax, ay, bx, by = kp[a, 0], kp[a, 1], kp[b, 0], kp[b, 1]
            dx, dy = bx - ax, by - ay
            t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
            d = np.hypot(xs - (ax + t * dx), ys - (ay + t * dy))
            best = d if best is None else np.minimum(best, d)
    if best is None:
        bx0, by0, bx1, by1 = p.box
        best = np.hypot(np.maximum(np.maximum(bx0 - xs, xs - bx1), 0), np.maximum(np.maximum(by0 - ys, ys - by1), 0))
    return np.minimum(best / height, 1.0)


def resolve_overlaps(people: list[Person], o: FinderOptions | None = None) -> None:
    """Give every pixel claimed by two or more masks (≥ 0.5) to one person, in place.

    Per pixel each claimant scores probability − distance_weight × distance to their skeleton (or box); the highest
    keeps it and the others' probability there is set to 0. Pairwise with one score per (person, pixel), so the
    outcome for three claimants is the same as a global argmax.
    """
    o = o or FinderOptions()
    for i, a in enumerate(people):
        for b in people[i + 1:]:
            if a.mask is None or b.mask is None:
                continue
            win = _overlap_window(a, b)
            if win is None:
                continue
            ma, mb = _window(a, win), _window(b, win)
            contested = (ma >= 0.5) & (mb >= 0.5)
            if not contested.any():
                continue
            sa = ma - o.distance_weight * distance_map(a, win, o.keypoint_score)
            sb = mb - o.distance_weight * distance_map(b, win, o.keypoint_score)
            a_wins = sa >= sb
            ma[contested & ~a_wins] = 0.0  # views into the masks: edits land in place
            mb[contested & a_wins] = 0.0


_DEFAULT: PeopleFinder | None = None
_DEFAULT_LOCK = threading.Lock()


def find_people(image: np.ndarray, options: FinderOptions | None = None, threads: int | None = None) -> list[Person]:
    """Every person in an H×W×3 uint8 RGB image (see `PeopleFinder.find`); the default finder is made once."""
    global _DEFAULT
    if options is not None or threads is not None:
        return PeopleFinder(options, threads=threads).find(image)
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = PeopleFinder()
    return _DEFAULT.find(image)


def without_masks(people: list[Person]) -> list[Person]:
    """Copies without masks (e.g. to log or send boxes and keypoints only)."""
    return [replace(p, mask=None, rect=(0, 0, 0, 0)) for p in people]
