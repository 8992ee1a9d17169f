"""Paired comparison of two evaluation reports: `python -m backend.compare BEFORE.json AFTER.json`.

Both reports come from `python -m backend.eval --json` on the same data and seed, so each target got the same
simulated prompts in both; the difference per target is therefore paired. For every mode and measure it prints the
mean before and after, the mean difference and its 95 % bootstrap interval over targets (resampling targets,
`--resamples`, fixed seed), and on how many targets it moved by more than 0.01 either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from backend.eval.run import HIT_IOU, iou_after

Measure = tuple[str, Callable[[dict], float]]


def _after(n: int) -> Callable[[dict], float]:
    return lambda record: float(iou_after(record["ious"], n))


# What is read from each mode's record; an interactive run that stopped early keeps its last value, and a text
# target scores the mean over its expressions.
MEASURES: dict[str, tuple[Measure, ...]] = {
    "box": (("IoU", _after(1)),),
    "clicks": (("IoU@1", _after(1)), ("IoU@3", _after(3)), ("IoU@5", _after(5))),
    "scribbles": (("round 1", _after(1)), ("round 2", _after(2)), ("round 5", _after(5))),
    "mixed": (("round 1", _after(1)), ("round 2", _after(2)), ("round 5", _after(5))),
    "text": (("IoU", lambda r: float(np.mean(r["ious"]))),
             ("right", lambda r: float(np.mean(r.get("hits") or [0.0])))),
    # Every person: a target's best IoU over the image's mattes, and whether it was found (best IoU >= HIT_IOU).
    "people": (("best IoU", _after(1)), ("found", lambda r: float(r["ious"][0] >= HIT_IOU))),
}


def _key(record: dict) -> tuple:
    return record["set"], record["item"], record["target"], record["mode"]


def bootstrap_interval(diffs: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of `diffs`, resampling its entries with replacement."""
    if diffs.size == 0:
        raise ValueError("no paired targets to compare")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, (resamples, diffs.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_rows(before: dict, after: dict, resamples: int = 2000) -> list[dict]:
    """One row per (mode, measure) present in both reports."""
    a = {_key(r): r for r in before["records"] if r.get("ious")}
    b = {_key(r): r for r in after["records"] if r.get("ious")}
    common = sorted(set(a) & set(b))
    rows = []
    for mode, measures in MEASURES.items():
        keys = [k for k in common if k[3] == mode]
        if not keys:
            continue
        for label, read in measures:
            x = np.array([read(a[k]) for k in keys])
            y = np.array([read(b[k]) for k in keys])
            d = y - x
            lo, hi = bootstrap_interval(d, resamples)
            rows.append({"mode": mode, "measure": label, "n": len(keys), "before": float(x.mean()),
                         "after": float(y.mean()), "diff": float(d.mean()), "low": lo, "high": hi,
                         "better": int((d > 0.01).sum()), "worse": int((d < -0.01).sum())})
    return rows


def format_rows(rows: Sequence[dict]) -> str:
    lines = [f"{'mode':10s} {'measure':9s} {'n':>4s} {'before':>7s} {'after':>7s} {'diff':>7s}  95 % interval"
             f"       better worse"]
    for r in rows:
        lines.append(f"{r['mode']:10s} {r['measure']:9s} {r['n']:4d} {r['before']:7.3f} {r['after']:7.3f} "
                     f"{r['diff']:+7.3f}  [{r['low']:+.3f}, {r['high']:+.3f}]  {r['better']:6d} {r['worse']:5d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.compare", description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--resamples", type=int, default=2000)
    args = p.parse_args(argv)
    try:
        before, after = (json.loads(path.read_text()) for path in (args.before, args.after))
        if before.get("settings", {}).get("seed") != after.get("settings", {}).get("seed"):
            raise ValueError("the reports were made with different seeds: their prompts are not paired")
        rows = paired_rows(before, after, args.resamples)
        if not rows:
            raise ValueError("the reports share no scored targets")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
