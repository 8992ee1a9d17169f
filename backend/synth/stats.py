"""Layout statistics of a data set: does it look like real multi-person photos? ``python -m backend.synth.stats DIR...``

Only the instance masks are read. For each pair of labelled people whose feet are visible (mask not touching the
bottom edge) it checks two perspective cues real photos obey: people standing at the same depth (feet within 5 % of
the image height) have similar heights, and of two people at clearly different depths (feet > 10 % apart) the one
with the lower feet is the taller. Reading held-out evaluation sets here is measurement, not training.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

from backend.data import load_set, read_instances

SAME_DEPTH = 0.05
DIFFERENT_DEPTH = 0.10


def _people(labels: np.ndarray) -> list[tuple[float, float]]:
    """(foot row, height) of each labelled person whose feet are inside the frame."""
    h = labels.shape[0]
    out = []
    for value in np.unique(labels):
        if value in (0, 255):
            continue
        rows = np.flatnonzero((labels == value).any(axis=1))
        if rows[-1] >= h - 2:
            continue
        out.append((float(rows[-1] + 1), float(rows[-1] + 1 - rows[0])))
    return out


def layout_stats(root: Path, limit: int | None = None) -> dict:
    """Perspective statistics of the set at ``root`` (instance-kind sets; other kinds have one person per mask)."""
    ds = load_set(root)
    items = ds.items[:limit] if limit else ds.items
    same_depth_ratio: list[float] = []
    agree: list[bool] = []
    persons: list[int] = []
    height_frac: list[float] = []
    for item in items:
        labels = read_instances(item.instances_path)
        h = labels.shape[0]
        people = _people(labels)
        persons.append(len([v for v in np.unique(labels) if v not in (0, 255)]))
        height_frac += [ph / h for _, ph in people]
        for (f1, h1), (f2, h2) in combinations(people, 2):
            gap = abs(f1 - f2) / h
            if gap < SAME_DEPTH:
                same_depth_ratio.append(float(max(h1, h2) / max(min(h1, h2), 1.0)))
            elif gap > DIFFERENT_DEPTH:
                agree.append((f1 > f2) == (h1 > h2))
    return {
        "set": ds.name,
        "images": len(items),
        "labelled_persons_per_image": round(float(np.mean(persons)), 2) if persons else 0.0,
        "feet_visible_height_frac_median": round(float(np.median(height_frac)), 3) if height_frac else None,
        "same_depth_pairs": len(same_depth_ratio),
        "same_depth_height_ratio_median": round(float(np.median(same_depth_ratio)), 3)
        if same_depth_ratio
        else None,
        "depth_pairs": len(agree),
        "nearer_is_taller_frac": round(float(np.mean(agree)), 3) if agree else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.synth.stats", description=__doc__)
    parser.add_argument("sets", nargs="+", type=Path, help="data set folders (with manifest.json)")
    parser.add_argument("--limit", type=int, default=None, help="at most N items per set")
    args = parser.parse_args(argv)
    try:
        for root in args.sets:
            print(json.dumps(layout_stats(root, args.limit)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
