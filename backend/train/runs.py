"""What every training stage shares: where data and caches live, how a run starts and logs, the common options,
and which data sets may be trained on. The stages (`backend.train.iscn`, `.mrn`, `.selector`) import this module;
the command line (`backend.train.cli`) imports the stages, so nothing imports back.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_CACHE = REPO / ".cache"
TRAIN_SETS = ("ccp-fashion", "davis16-person", "humanseg300-removebg")


def start_run(args: argparse.Namespace) -> tuple[Path, np.random.Generator, Callable[[str], None]]:
    """Seed torch and numpy, create the run folder, and return a logger that prints and appends to train.log.

    Both stages log the same way so a resumed run keeps one readable log per folder.
    """
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train.log"

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        with log_path.open("a") as fh:
            fh.write(line + "\n")

    return out, np.random.default_rng(args.seed), log


def add_run_arguments(p: argparse.ArgumentParser, *, steps: int, minutes: float, batch: int, lr: float) -> None:
    """The options every training stage shares: budget, optimiser, threads, seed, logging and resuming."""
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--max-minutes", type=float, default=minutes)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--resume", action="store_true")


def training_sets(data_root: Path | None, synth_root: Path | None) -> list:
    """The training data sets: the named real sets plus every synthetic set found under `synth_root`."""
    from backend import data

    roots = [] if data_root is None else [data_root / n for n in TRAIN_SETS if (data_root / n / "manifest.json").is_file()]
    if synth_root is not None and synth_root.is_dir():
        roots += sorted(p.parent for p in synth_root.glob("*/manifest.json"))
    sets = [data.load_set(r) for r in roots]
    held = [s.name for s in sets if s.name in data.HELD_OUT_SETS]
    if held:
        raise SystemExit(f"refusing to train on held-out evaluation sets: {held}")
    return sets
