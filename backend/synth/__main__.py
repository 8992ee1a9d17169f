"""``python -m backend.synth --out DIR --count N --seed S --mode realistic|random [--sources ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from backend.synth.cutouts import default_data_root
from backend.synth.dataset import DEFAULT_SOURCES, generate_set, log
from backend.synth.errors import SynthError
from backend.synth.generate import MODES

REPO = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend.synth",
        description="Compose multi-person training images from real person cutouts (see docs/synthesis.md).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (data set layout)")
    parser.add_argument("--count", type=int, required=True, help="number of composites")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    parser.add_argument("--mode", choices=MODES, default="realistic", help="scene priors or random baseline")
    parser.add_argument(
        "--sources",
        nargs="+",
        default=list(DEFAULT_SOURCES),
        help="scene sets under --data (cutouts always come from the ccp-fashion train split)",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="data root (default $DFIMAT_DATA or ../shared/data)"
    )
    parser.add_argument("--max-side", type=int, default=640, help="long side of the composites in pixels")
    parser.add_argument(
        "--instances",
        type=int,
        default=None,
        help="stop once this many labelled persons are written (<= --count images)",
    )
    parser.add_argument(
        "--no-bystanders",
        action="store_true",
        help="do not detect unlabelled people in single-person scene photos (they then stay background, 0)",
    )
    parser.add_argument(
        "--bystander-cache",
        type=Path,
        default=REPO / ".cache" / "synth-bystanders",
        help="detections cached here",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing set in --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The machine is shared: one process, one OpenCV thread.
    cv2.setNumThreads(1)
    try:
        manifest = generate_set(
            args.out,
            args.count,
            args.seed,
            args.mode,
            args.data or default_data_root(),
            sources=args.sources,
            max_side=args.max_side,
            overwrite=args.overwrite,
            progress=log,
            instances=args.instances,
            bystander_dir=None if args.no_bystanders else args.bystander_cache,
        )
    except (SynthError, OSError, RuntimeError) as exc:
        log(f"error: {exc}")
        return 1
    persons = sum(it["persons"] for it in manifest["items"])
    log(f"wrote {len(manifest['items'])} composites with {persons} labelled persons to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
