"""2 x 2 mosaics of labelled photos: people as small as in crowded real photos, from photos nobody trained on.

The held-out real photos show people at a median 5 % of the image, the validation composites at 19 %, and choices
made on the composites have twice not carried over to the real photos (docs/experiments.md, "Training"). A mosaic of four
validation-split photos shrinks each person to about a quarter of its size and puts several people in one image,
with real photo content throughout. It is still not a crowd (people never overlap across cells), so it sits between
the composites and the real multi-person sets.

``python -m backend.synth.mosaic --out DIR [--data SETS...] [--count N] [--size PX] [--seed S]`` writes a folder in
the ``../shared/data`` layout (instance masks) from the validation split (`backend.data.split`) of the given sets.
The ISCN's training cache uses `mosaic` too (`backend.train.cache`, ``cache --mosaics``), on training photos.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from backend import data
from backend.synth.cutouts import default_data_root

IGNORE = data.IGNORE_VALUE
MIN_FRAC = 0.005  # people shrunk below this share of the mosaic are neither targets nor background
DEFAULT_SETS = ("ccp-fashion", "davis16-person")
DEFAULT_SIZE = 768
DEFAULT_COUNT = 60

Part = tuple[np.ndarray, np.ndarray]  # (H x W x 3 uint8 RGB, H x W uint8 labels: 1..n people, IGNORE never scored)


def mosaic(parts: Sequence[Part], size: int, rng: np.random.Generator, min_frac: float = MIN_FRAC) -> Part:
    """Four parts as a 2 x 2 grid on a ``size`` square, each scaled to 80-100 % of its cell at a random place in it
    (YOLO-style mosaic); people are renumbered 1..n across the parts."""
    img = np.zeros((size, size, 3), np.uint8)
    lab = np.zeros((size, size), np.uint8)
    cell = size // 2
    offset = 0
    for k, (im, lb) in enumerate(parts):
        h, w = im.shape[:2]
        s = min(cell / w, cell / h) * rng.uniform(0.8, 1.0)
        nw, nh = max(1, int(w * s)), max(1, int(h * s))
        x0 = (k % 2) * cell + int(rng.integers(0, cell - nw + 1))
        y0 = (k // 2) * cell + int(rng.integers(0, cell - nh + 1))
        img[y0:y0 + nh, x0:x0 + nw] = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA)
        small = cv2.resize(lb, (nw, nh), interpolation=cv2.INTER_NEAREST)
        n = int(max((v for v in np.unique(lb) if v != IGNORE), default=0))
        lab[y0:y0 + nh, x0:x0 + nw] = np.where((small > 0) & (small != IGNORE), small.astype(np.int32) + offset,
                                               small).astype(np.uint8)
        offset += n
    values = [v for v in range(1, offset + 1) if (lab == v).any()]
    relabel = np.arange(256, dtype=np.uint8)
    k = 0
    for v in values:
        if (lab == v).mean() < min_frac:
            relabel[v] = IGNORE
        else:
            k += 1
            relabel[v] = k
    return img, relabel[lab]


def item_part(item: data.Item) -> tuple[Part, int]:
    """An item's photo with its targets as 1..n (small people and the set's ignore pixels IGNORE), and n."""
    image = data.read_image(item.image_path)
    t = data.person_targets(item)
    labels = np.zeros(t.ignore.shape, np.uint8)
    labels[t.ignore] = IGNORE
    for m in t.small:
        labels[m] = IGNORE
    for k, m in enumerate(t.masks):
        labels[m] = k + 1
    return (image, labels), len(t.masks)


def write_set(out: Path, sets: Sequence[data.DataSet], count: int, size: int, seed: int) -> dict:
    """Write ``count`` mosaics of the sets' validation-split photos (with at least one target) into ``out``."""
    items = [it for s in sets for it in data.split(s.items)[1] if it.mask_kind != "all-people"]
    if len(items) < 4:
        raise data.DataError(f"a mosaic needs 4 validation photos with people, found {len(items)}")
    out = Path(out)
    if (out / "manifest.json").exists():
        raise FileExistsError(f"{out} already holds a data set; choose another --out")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "instances").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    parts: dict[str, Part] = {}
    for it in items:
        part, n = item_part(it)
        if n:
            parts[it.key] = part
    keys = list(parts)
    # Every photo is used about equally often: walk shuffled copies of the list four at a time.
    order: list[str] = []
    entries = []
    for c in range(count):
        while len(order) < 4:
            order += [keys[i] for i in rng.permutation(len(keys))]
        pick, order = order[:4], order[4:]
        img, lab = mosaic([parts[p] for p in pick], size, rng)
        item_id = f"mosaic_{c:04d}"
        if not cv2.imwrite(str(out / "images" / f"{item_id}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)) \
                or not cv2.imwrite(str(out / "instances" / f"{item_id}.png"), lab):
            raise OSError(f"cannot write {item_id} into {out}")
        people = [v for v in range(1, 255) if (lab == v).any()]
        entries.append({"id": item_id, "image": f"images/{item_id}.png", "instances": f"instances/{item_id}.png",
                        "width": size, "height": size, "persons": len(people),
                        "person_area_px": [int((lab == v).sum()) for v in people], "from": pick})
    manifest = {
        "name": out.name,
        "source": f"`python -m backend.synth.mosaic --count {count} --size {size} --seed {seed}`: 2 x 2 mosaics of "
                  "the validation split of " + ", ".join(s.name for s in sets),
        "license": "derived from the source photos; their terms apply: "
                   + " | ".join(f"{s.name}: {s.license}" for s in sets),
        "mask_kind": "instance",
        "note": "0 background, 1..N persons, 255 ignore (people shrunk below 0.5 % of the mosaic, and the sources' "
                "own ignore pixels). Source photos label one person each: other people in them are unlabelled. "
                "Mosaic layout, not a real crowd: people never overlap across cells.",
        "synthetic": True,
        "items": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.synth.mosaic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (data set layout)")
    parser.add_argument("--data", type=Path, nargs="+", help="source set folders (default: "
                        + ", ".join(DEFAULT_SETS) + " under $DFIMAT_DATA or ../shared/data)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side of the square mosaic in px")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count < 1 or args.size < 64:
        parser.error("--count must be >= 1 and --size >= 64")
    roots = args.data or [default_data_root() / s for s in DEFAULT_SETS]
    try:
        sets = [data.load_set(r) for r in roots]
        held = [s.name for s in sets if s.name in data.HELD_OUT_SETS]
        if held:
            parser.error(f"{', '.join(held)} is held out for evaluation; mosaics are for validation only")
        manifest = write_set(args.out, sets, args.count, args.size, args.seed)
    except (data.DataError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n = sum(e["persons"] for e in manifest["items"])
    print(f"wrote {len(manifest['items'])} mosaics with {n} labelled people to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
