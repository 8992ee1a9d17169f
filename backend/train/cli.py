"""Training DFIMat-S on CPU: `python -m backend.train cache|iscn|mrn|assemble ...` (see docs/training.md).

Stage 1 (ISCN): the frozen backbone's features are cached once (`cache`), then only the ISCN heads train, with the
paper's user simulation (Sec. 5.2) and multi-round loops (no-grad rounds, then one round with gradients).
Stage 2 (MRN): ISCN frozen; crops around targets with coarse masks; targets are PSEUDO ground-truth alpha
(closed-form matting in a band around the true binary edge, `backend.train.pseudo_alpha`), precomputed once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from backend.train.runs import DEFAULT_CACHE, DEFAULT_DATA, REPO, training_sets


def cmd_cache(args: argparse.Namespace) -> int:
    import torch

    from backend import data
    from backend.train.cache import build_cache

    torch.set_num_threads(args.threads)
    sets = training_sets(None if args.only_synth else args.data, args.synth)
    train, val = data.training_items(sets)
    if args.limit:
        train = train[: args.limit]
    print(f"sets: {[s.name for s in sets]}; train items {len(train)}, val items {len(val)} (val never cached)",
          flush=True)
    build_cache(args.out, train, size=args.size, collages=args.collages,
                log=lambda m: print(m, flush=True), mosaics=args.mosaics, keep_items=not args.mosaics_only)
    return 0


def _iscn_record(meta: dict) -> dict:
    """A stage-1 run's record; an assembled checkpoint (e.g. the committed weights) already nests it under "iscn"."""
    if isinstance(meta.get("iscn"), dict):
        return meta["iscn"]
    return {k: v for k, v in meta.items() if not k.startswith("mrn")}


def cmd_assemble(args: argparse.Namespace) -> int:
    """Final weights = ISCN from the stage-1 run + MRN from the stage-2 run (fp16, trainable parts only)."""
    from backend.dfimat.model import count_parameters, load_checkpoint, save_checkpoint

    model, iscn_meta = load_checkpoint(args.iscn, with_mrn=False)
    mrn_model, mrn_meta = load_checkpoint(args.mrn)
    model.mrn.load_state_dict(mrn_model.mrn.state_dict())
    if args.selector is not None:
        # The selector scores the ISCN's proposals from prompt-agreement features, not from ISCN internals, so an
        # earlier one still runs on a changed ISCN; `train selector` refits it to the new proposals.
        selector, selector_meta = load_checkpoint(args.selector)
        model.selector = selector.selector
        if model.selector is None:
            raise SystemExit(f"{args.selector} has no query selector")
    if args.marks_iscn is not None:
        # An assembled checkpoint that already carries a marks ISCN gives that one, as `train iscn
        # --first-round-iscn` reads it; a stage-1 run gives its ISCN.
        first, first_meta = load_checkpoint(args.marks_iscn, with_mrn=False)
        carried = first.iscn_marks is not None
        model.iscn_marks = first.iscn_marks if carried else first.iscn
    meta = {"iscn": _iscn_record(iscn_meta),
            # An assembled checkpoint (e.g. the committed weights) already nests its MRN record under "mrn".
            "mrn": mrn_meta["mrn"] if isinstance(mrn_meta.get("mrn"), dict)
            else {k: v for k, v in mrn_meta.items() if k.startswith("mrn")},
            "parameters": {"iscn_trainable": count_parameters(model.iscn), "mrn": count_parameters(model.mrn),
                           "backbone_frozen": count_parameters(model.backbone)}}
    if args.selector is not None and isinstance(selector_meta.get("selector"), dict):
        meta["selector"] = selector_meta["selector"]
    if args.marks_iscn is not None:
        meta["iscn_marks"] = first_meta.get("iscn_marks", {}) if carried else _iscn_record(first_meta)
    path = save_checkpoint(model, args.out, meta)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB): {meta}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.train", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("cache", help="encode the training images once with the frozen backbone")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--synth", type=Path, default=DEFAULT_CACHE / "synth")
    p.add_argument("--out", type=Path, default=DEFAULT_CACHE / "iscn-384")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--collages", type=int, default=300)
    p.add_argument("--limit", type=int, default=0, help="only the first N items (smoke tests)")
    p.add_argument("--only-synth", action="store_true", help="cache only the synthetic sets under --synth")
    p.add_argument("--mosaics", type=int, default=0,
                   help="also cache this many 2 x 2 mosaics of the training images (small people)")
    p.add_argument("--mosaics-only", action="store_true", help="cache the collages and mosaics, not the items")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("assemble", help="combine the stage-1 ISCN and stage-2 MRN checkpoints into the final weights")
    p.add_argument("--iscn", type=Path, default=REPO / "runs" / "iscn" / "dfimat-s-iscn.pt")
    p.add_argument("--mrn", type=Path, default=REPO / "runs" / "mrn" / "dfimat-s.pt")
    p.add_argument("--out", type=Path, default=REPO / "models" / "dfimat-s" / "dfimat-s.pt")
    p.add_argument("--selector", type=Path, default=None,
                   help="carry this checkpoint's query selector (default: none; run `selector` last)")
    p.add_argument("--marks-iscn", type=Path, default=None,
                   help="carry this stage-1 run's ISCN as the marks ISCN (trained with --others; the engine's "
                        "marks_iscn), or the marks ISCN of an assembled checkpoint that has one")
    p.set_defaults(func=cmd_assemble)

    from backend.train.iscn import add_iscn_parser
    from backend.train.mrn import add_mrn_parser
    from backend.train.selector import add_selector_parser

    add_iscn_parser(sub)
    add_mrn_parser(sub)
    add_selector_parser(sub)
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
