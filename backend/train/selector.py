"""Stage 3: train the query selector (`backend.dfimat.selector`) on the frozen ISCN's own outputs.

The ISCN and MRN of `--init` stay as they are. Simulated users (the same sampler as stage 1: box, clicks, scribbles,
text, mixed, 0-2 earlier rounds) prompt the frozen ISCN on cached training rows; for every sample the script keeps
each query's selector features and its IoU with the ground truth on the model grid. The selector is then fitted to
put the most probability on the best queries (cross-entropy against a softmax of the IoUs). Round 1's earlier rounds
follow the concept classifier's picks; from round 2 on, samples are collected again with the fitted selector picking
the earlier rounds' masks, as the deployed model does, and the selector is refitted on everything (DAgger style: a
selector fitted only after the classifier's picks made later click rounds worse on held-out photos). The fit is
checked on the rows it did not see (every 10th cache row) and written with the `--init` weights into one checkpoint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from backend.dfimat.model import count_parameters, load_checkpoint, save_checkpoint
from backend.dfimat.selector import QuerySelector, query_features
from backend.train.cache import open_cache
from backend.train.iscn import MODES as MODE_NAMES
from backend.train.iscn import Sampler, _batch_feats, compute_texts, earlier_rounds, round_batch
from backend.train.runs import DEFAULT_CACHE, REPO, add_run_arguments, start_run

CHECK_EVERY = 10  # cache rows with row % CHECK_EVERY == 0 are kept for the check, never fitted
TEMPERATURE = 0.05  # IoU differences of a few points decide the target distribution
MODE_INDEX = {m: i for i, m in enumerate(MODE_NAMES)}


def collect(model, caches: list[dict], sampler: Sampler, count: int, batch: int, embed, log,
            selector: QuerySelector | None = None) -> dict[str, np.ndarray]:
    """Features (N, Q, F), per-query IoUs (N, Q), classifier pick (N,), mode index (N,), check flag (N,).

    `selector` picks the masks of the earlier rounds (None: the concept classifier), so the previous predictions
    the recorded round sees are the ones the deployed model would have shown."""
    size = caches[0]["meta"]["size"]
    feats_out, ious_out, picks, modes, check = [], [], [], [], []
    t0 = time.time()
    while sum(len(x) for x in ious_out) < count:
        samples = [sampler.draw() for _ in range(batch)]
        feats = _batch_feats(caches, samples)
        prev, has_prev = earlier_rounds(model, feats, samples, sampler, int(sampler.rng.choice([0, 0, 0, 1, 2])),
                                        size, embed, selector)
        with torch.no_grad():
            prompts = round_batch(samples, size, embed)
            masks, logits = model.iscn(feats, prompts, prev, has_prev)
            qf = query_features(masks, logits, prompts["dense"], prev, has_prev)
        gt = torch.from_numpy(np.stack([s["gt"] for s in samples])).float().unsqueeze(1)
        ign = torch.from_numpy(np.stack([s["ignore"] for s in samples])).float().unsqueeze(1)
        target = (F.avg_pool2d(gt, 4) > 0.5)  # (B, 1, G, G)
        keep = F.max_pool2d(ign, 4) < 0.5
        pred = masks > 0
        inter = (pred & target & keep).flatten(2).sum(-1).float()
        union = ((pred | target) & keep).flatten(2).sum(-1).float()
        ious = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        feats_out.append(qf.numpy())
        ious_out.append(ious.numpy())
        picks.append(logits.argmax(dim=1).numpy())
        modes.append(np.array([MODE_INDEX[s["mode"]] for s in samples]))
        check.append(np.array([s["row"] % CHECK_EVERY == 0 for s in samples]))
        done = sum(len(x) for x in ious_out)
        if done % (batch * 50) == 0:
            log(f"collected {done}/{count} samples ({time.time() - t0:.0f} s)")
    return {"features": np.concatenate(feats_out), "ious": np.concatenate(ious_out), "pick": np.concatenate(picks),
            "mode": np.concatenate(modes), "check": np.concatenate(check)}



def fit(data: dict[str, np.ndarray], steps: int, lr: float, seed: int, log) -> QuerySelector:
    torch.manual_seed(seed)
    fit_rows = ~data["check"]
    x = torch.from_numpy(data["features"][fit_rows]).float()
    y = torch.from_numpy(data["ious"][fit_rows]).float()
    soft = (y / TEMPERATURE).softmax(dim=1)
    selector = QuerySelector()
    opt = torch.optim.AdamW(selector.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (min(512, len(x)),), generator=gen)
        loss = -(soft[idx] * selector.score(x[idx]).log_softmax(dim=1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0:
            log(f"fit step {step} loss {float(loss.detach()):.4f}")
    return selector.eval()


def report(selector: QuerySelector, data: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean IoU of the classifier's pick, the selector's pick and the best query, per mode and overall."""
    with torch.no_grad():
        chosen = selector.score(torch.from_numpy(data["features"][rows]).float()).argmax(dim=1).numpy()
    ious = data["ious"][rows]
    n = np.arange(len(ious))
    out = {}
    for name, sel in [("all", np.ones(len(ious), bool))] + [(m, data["mode"][rows] == i)
                                                              for i, m in enumerate(MODE_NAMES)]:
        if sel.any():
            out[name] = {"n": int(sel.sum()), "classifier": float(ious[n[sel], data["pick"][rows][sel]].mean()),
                         "selector": float(ious[n[sel], chosen[sel]].mean()), "oracle": float(ious[sel].max(1).mean())}
    return out


def train_selector(args: argparse.Namespace) -> int:
    from backend.dfimat.text import TextEncoder

    out, rng, log = start_run(args)
    model, meta = load_checkpoint(args.init)
    model.iscn.eval()
    caches = [open_cache(Path(p)) for p in args.cache]
    texts = [compute_texts(Path(p), c, log) for p, c in zip(args.cache, caches, strict=True)]
    encoder = TextEncoder()
    data: dict[str, np.ndarray] | None = None
    selector: QuerySelector | None = None
    sampler = Sampler(caches, texts, rng)
    for k in range(1, args.rounds + 1):
        # Round 1 records what follows the concept classifier's picks; later rounds record what follows the
        # selector's own picks (as deployed) and refit on everything collected so far.
        data_path = out / f"selector_samples_r{k}.npz"
        if args.resume and data_path.is_file():
            new = dict(np.load(data_path))
            log(f"round {k}: reusing {len(new['ious'])} collected samples from {data_path}")
        else:
            new = collect(model, caches, sampler, args.samples, args.batch, encoder.embed, log, selector)
            np.savez(data_path, **new)
        data = new if data is None else {key: np.concatenate([data[key], new[key]]) for key in data}
        selector = fit(data, args.steps, args.lr, args.seed, log)
    for split_name, rows in (("fitted rows", ~data["check"]), ("check rows (not fitted)", data["check"])):
        for mode, r in report(selector, data, rows).items():
            log(f"{split_name:<24} {mode:<10} n {r['n']:>5}  IoU classifier {r['classifier']:.3f}  "
                f"selector {r['selector']:.3f}  best query {r['oracle']:.3f}")
    model.selector = selector
    meta = dict(meta)
    meta["selector"] = {"samples": int(len(data["ious"])), "rounds": args.rounds, "steps": args.steps, "caches": [str(p) for p in args.cache],
                        "init": str(args.init), "parameters": count_parameters(selector),
                        "check": report(selector, data, data["check"])}
    path = save_checkpoint(model, args.weights_out or out / "dfimat-s.pt", meta)
    log(f"wrote {path}")
    return 0


def add_selector_parser(sub) -> None:

    p = sub.add_parser("selector", help="stage 3: train the query selector on the frozen ISCN's outputs")
    p.add_argument("--init", type=Path, default=REPO / "models" / "dfimat-s" / "dfimat-s.pt",
                   help="the DFIMat-S checkpoint whose ISCN (frozen) and MRN are kept")
    p.add_argument("--cache", type=Path, nargs="+", default=[DEFAULT_CACHE / "iscn-384"])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "selector")
    p.add_argument("--weights-out", type=Path, default=None, help="checkpoint to write (default OUT/dfimat-s.pt)")
    p.add_argument("--samples", type=int, default=8000, help="simulated prompt rounds to collect per round")
    p.add_argument("--rounds", type=int, default=2,
                   help="collect-and-fit rounds; round 2 on collects after the round-1 selector's own picks")
    add_run_arguments(p, steps=3000, minutes=0.0, batch=16, lr=0.003)
    p.set_defaults(func=train_selector)
