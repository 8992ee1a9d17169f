"""Stage 2: train the MRN with the ISCN frozen (decoupled training, paper Sec. 5.1).

`prepare` cuts one crop per training person (bounding box + margin, letterboxed to a fixed square) and computes its
PSEUDO ground-truth alpha with `backend.train.pseudo_alpha` (closed-form matting in a band around the real binary edge; no
real alpha exists for these photos), once, into `.cache/mrn-<side>/`. `train` then feeds the MRN random windows of
those crops (pseudo alpha made consistent with the real mask: `label_consistent`) with a coarse mask that is either the frozen ISCN's prediction for a box prompt (mapped into the crop) or
the ground-truth mask degraded the way ISCN output is (low resolution, shifted edges, holes), and minimises Eq. 7 on
both PRM outputs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from backend.dfimat.encoder import Letterbox
from backend.dfimat.losses import hard_l1_loss
from backend.train.runs import DEFAULT_CACHE, DEFAULT_DATA, REPO, add_run_arguments, start_run, training_sets

WINDOW = 192


def _crop_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = mask.shape
    return (int(max(0, x0 - mx)), int(max(0, y0 - my)), int(min(w, np.ceil(x1 + mx))), int(min(h, np.ceil(y1 + my))))


def _crop_one(image: np.ndarray, mask: np.ndarray, margin: float, arrays: tuple, entries: list[dict],
              entry: dict) -> bool:
    """Write one person's letterboxed crop, mask, pseudo alpha and valid area as row len(entries); False if the
    person is too small at the crop's scale."""
    from backend.train.pseudo_alpha import pseudo_alpha

    images, masks, alphas, valid = arrays
    side = images.shape[1]
    box = _crop_box(mask, margin)
    x0, y0, x1, y1 = box
    lb = Letterbox(y1 - y0, x1 - x0, side)
    img_sq = lb.image_to_square(image[y0:y1, x0:x1], cv2.INTER_AREA)
    m_sq = lb.image_to_square(mask[y0:y1, x0:x1].astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
    h, w = lb.inner
    if m_sq.sum() < 16:
        return False
    alpha = np.zeros((side, side), np.float32)
    alpha[:h, :w] = pseudo_alpha(img_sq[:h, :w], m_sq[:h, :w])
    k = len(entries)
    images[k], masks[k] = img_sq, m_sq
    alphas[k] = np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8)
    valid[k] = 0
    valid[k, :h, :w] = 1
    entries.append({**entry, "box": list(box)})
    return True


def prepare(out: Path, items: list, side: int, margin: float, limit: int, log) -> Path:
    """Crops, masks and pseudo alpha for the people of up to `limit` training photos; resumable (skips if complete).

    A single-person or all-people photo gives one crop. A multi-person composite (`instance` sets from
    `backend.synth`) gives one crop per target, with the other people left in the crop as background: the MRN must
    learn to stop at a neighbour, not only at the backdrop."""
    from backend import data

    out = Path(out)
    if (out / "meta.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(items))[:limit] if limit else np.arange(len(items))
    # Rows for at most one crop per listed person (the manifest's count, small people included; read from the
    # instance map only where a manifest does not say): `count` trims what is skipped.
    n = sum((items[int(i)].persons or len(data.person_targets(items[int(i)]).masks))
            if items[int(i)].mask_kind == "instance" else 1 for i in order)
    images = np.lib.format.open_memmap(out / "images.npy", "w+", np.uint8, (n, side, side, 3))
    masks = np.lib.format.open_memmap(out / "masks.npy", "w+", np.uint8, (n, side, side))
    alphas = np.lib.format.open_memmap(out / "alphas.npy", "w+", np.uint8, (n, side, side))
    valid = np.lib.format.open_memmap(out / "valid.npy", "w+", np.uint8, (n, side, side))
    entries: list[dict] = []
    t0 = time.time()
    for i in order:
        item = items[int(i)]
        targets = data.person_targets(item)
        if not targets.masks:
            continue
        image = data.read_image(item.image_path)
        per_target = targets.masks if item.mask_kind == "instance" else targets.masks[:1]
        for k, mask in enumerate(per_target):
            entry = {"key": item.key, "target": k + 1, "height": item.height, "width": item.width}
            if len(entries) < n and _crop_one(image, mask, margin, (images, masks, alphas, valid), entries,
                                              entry) and len(entries) % 50 == 0:
                log(f"mrn prepare {len(entries)}/{n} ({time.time() - t0:.0f}s)")
    for arr in (images, masks, alphas, valid):
        arr.flush()
    (out / "meta.json").write_text(json.dumps({"side": side, "count": len(entries), "entries": entries,
                                               "target": "pseudo alpha (closed-form matting in a band)"}))
    log(f"mrn prepare done: {len(entries)} crops in {time.time() - t0:.0f}s")
    return out


def label_consistent(alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pseudo alpha whose 0.5 level set is the labelled edge: >= 0.5 inside the real mask, <= 0.5 outside.

    Closed-form matting in a band moves the edge (its alpha > 0.5 agreed with the masks at IoU ~0.94 on our crops),
    and the masks are the only real labels we have; so matting decides how soft the edge is, the label decides where
    it is."""
    return np.where(mask, np.maximum(alpha, 0.5), np.minimum(alpha, 0.5)).astype(np.float32)


def degrade(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A GT mask made to look like coarse ISCN output: low-res, blurred, shifted edges, occasional holes/blobs."""
    m = mask.astype(np.float32)
    side = m.shape[0]
    k = int(rng.integers(1, 6))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    m = cv2.dilate(m, kernel) if rng.random() < 0.5 else cv2.erode(m, kernel)
    for _ in range(int(rng.integers(0, 3))):
        cx, cy, r = rng.integers(0, side, 2).tolist() + [int(rng.integers(4, side // 10))]
        cv2.circle(m, (cx, cy), r, float(rng.random() < 0.5), -1)
    low = int(rng.integers(side // 10, side // 3))
    m = cv2.resize(cv2.resize(m, (low, low), interpolation=cv2.INTER_AREA), (side, side),
                   interpolation=cv2.INTER_LINEAR)
    return np.clip(m, 0.0, 1.0)


def iscn_coarse(cache_dirs: list[Path], crops: dict, weights: Path, log) -> np.ndarray | None:
    """Frozen-ISCN box-prompt predictions mapped into each crop (float16; NaN rows where no feature cache holds
    the crop's photo), or None if not available. The box is the crop's own target's (`target`, 1-based, as the
    caches label targets)."""
    from backend.data.simulate import box_from_mask
    from backend.dfimat.iscn import best_mask
    from backend.dfimat.model import load_checkpoint
    from backend.dfimat.prompt_tensors import build_prompt_tensors, collate
    from backend.dfimat.prompts import PromptHistory, RoundPrompts
    from backend.train.cache import open_cache

    dirs = [Path(d) for d in cache_dirs if (Path(d) / "meta.json").is_file()]
    if not dirs or not Path(weights).is_file():
        return None
    model, _ = load_checkpoint(weights, with_mrn=False)
    caches = [open_cache(d) for d in dirs]
    row_of = {e["key"]: (c, i) for c, cache in enumerate(caches) for i, e in enumerate(cache["meta"]["entries"])}
    size = caches[0]["meta"]["size"]
    side = crops["meta"]["side"]
    out = np.full((crops["meta"]["count"], side, side), np.nan, np.float16)
    todo = [(j, row_of[e["key"]]) for j, e in enumerate(crops["meta"]["entries"]) if e["key"] in row_of]
    t0 = time.time()
    for b in range(0, len(todo), 8):
        chunk = todo[b:b + 8]
        tensors, lbs = [], []
        for j, (c, r) in chunk:
            e = crops["meta"]["entries"][j]
            hist = PromptHistory()
            target = np.asarray(caches[c]["labels"][r]) == e.get("target", 1)
            rnd = RoundPrompts(box=box_from_mask(target))
            hist.add(rnd)
            tensors.append(build_prompt_tensors(hist, rnd, Letterbox(size, size, size)))
            lbs.append(Letterbox(e["height"], e["width"], size))
        feats = {k: torch.from_numpy(np.stack([np.asarray(caches[c][k][r]) for _, (c, r) in chunk])).float()
                 for k in ("s4", "s8", "s16", "s32")}
        g = size // 4
        with torch.no_grad():
            masks, logits = model.iscn(feats, collate(tensors, size), torch.zeros(len(chunk), 1, g, g),
                                       torch.zeros(len(chunk), dtype=torch.bool))
            prob = best_mask(masks, logits).sigmoid().numpy()
        for (j, _), p, lb in zip(chunk, prob, lbs, strict=True):
            e = crops["meta"]["entries"][j]
            x0, y0, x1, y1 = e["box"]
            crop_lb = Letterbox(y1 - y0, x1 - x0, side)
            h, w = crop_lb.inner
            out[j] = 0
            out[j, :h, :w] = lb.square_to_crop(p, (x0, y0, x1, y1), (h, w))
    log(f"ISCN coarse masks for {len(todo)} crops in {time.time() - t0:.0f}s")
    return out


def pose_priors(crops_dir: Path, crops: dict, log) -> np.ndarray | None:
    """mediapipe's pose mask for each crop's person, prompted by the person's tight box as the engine prompts it
    (`backend.runtime.pose_prior.pose_mask`), cached in ``pose.npy`` (NaN where the pose model found nobody); None without
    mediapipe. At inference the MRN's coarse mask is the ISCN's joined with this prior in every round that has one."""
    from backend.data.simulate import box_from_mask
    from backend.dfimat.prompts import RoundPrompts
    from backend.runtime.pose_prior import pose_mask

    path = Path(crops_dir) / "pose.npy"
    n, side = crops["meta"]["count"], crops["meta"]["side"]
    if path.is_file():
        return np.load(path, mmap_mode="r")
    try:
        from backend.runtime.people import pose_detector

        pose = pose_detector().on_crop()
    except RuntimeError as exc:
        log(f"no pose priors for the MRN's inputs: {exc}")
        return None
    out = np.full((n, side, side), np.nan, np.float16)
    t0 = time.time()
    for i in range(n):
        image = np.ascontiguousarray(crops["images"][i])
        box = box_from_mask(np.asarray(crops["masks"][i]) > 0)
        prior = pose_mask(RoundPrompts(box=box), side, side, lambda r, image=image: pose(image, r))
        if prior.max() > 0.5:
            out[i] = prior
    np.save(path, out)
    log(f"pose priors for {int((~np.isnan(out[:, 0, 0])).sum())} of {n} crops in {time.time() - t0:.0f}s")
    return out


def open_crops(path: Path) -> dict:
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    n = meta["count"]
    return {"meta": meta, **{k: np.load(path / f"{k}.npy", mmap_mode="r")[:n]
                             for k in ("images", "masks", "alphas", "valid")}}


def _batch(crops: dict, coarse: np.ndarray | None, idx: np.ndarray, rng: np.random.Generator,
           priors: np.ndarray | None = None, min_scale: float = 1.0):
    from backend.runtime.pose_prior import join_prior

    side = crops["meta"]["side"]
    # The engine never enlarges a crop, so a small person reaches the MRN at its own few pixels; half of the batches
    # are shrunk (the whole batch by one factor) so the MRN also learns people at that scale.
    size = side if min_scale >= 1.0 or rng.random() < 0.5 else int(round(side * rng.uniform(min_scale, 1.0)))
    window = min(WINDOW, size // 32 * 32)
    xs, ys = [], []
    for i in idx:
        img = np.asarray(crops["images"][i]).astype(np.float32) / 255.0
        alpha = label_consistent(np.asarray(crops["alphas"][i]).astype(np.float32) / 255.0,
                                 np.asarray(crops["masks"][i]) > 0)
        u = rng.random()
        has_coarse = coarse is not None and not np.isnan(coarse[i, 0, 0])
        if has_coarse and priors is not None and not np.isnan(priors[i, 0, 0]) and u < 0.4:
            m = join_prior(coarse[i].astype(np.float32), priors[i].astype(np.float32))
        elif has_coarse and u < (0.6 if priors is not None else 0.5):
            m = coarse[i].astype(np.float32)
        else:
            m = degrade(np.asarray(crops["masks"][i]), rng)
        if size != side:
            img, alpha, m = (cv2.resize(v, (size, size), interpolation=cv2.INTER_AREA) for v in (img, alpha, m))
        oy, ox = rng.integers(0, size - window + 1, 2) if size > window else (0, 0)
        win = np.s_[oy:oy + window, ox:ox + window]
        x = np.concatenate([img[win], m[win][..., None]], axis=2)
        a = alpha[win]
        if rng.random() < 0.5:
            x, a = x[:, ::-1], a[:, ::-1]
        xs.append(np.ascontiguousarray(x.transpose(2, 0, 1)))
        ys.append(np.ascontiguousarray(a[None]))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def train_mrn(args: argparse.Namespace) -> int:
    from backend import data
    from backend.dfimat.model import count_parameters, load_checkpoint, save_checkpoint

    out, rng, log = start_run(args)

    sets = [s for s in training_sets(args.data, None) if s.mask_kind in ("single-person", "all-people")]
    sets += training_sets(None, args.synth) if args.synth else []
    train_items, _ = data.training_items(sets)
    crops_dir = prepare(args.crops, train_items, args.side, args.margin, args.limit, log)
    if args.prepare_only:
        return 0
    crops = open_crops(crops_dir)
    model, meta = load_checkpoint(args.iscn, with_mrn=args.init_mrn)
    coarse = iscn_coarse(args.iscn_cache, crops, args.iscn, log)
    priors = pose_priors(crops_dir, crops, log) if args.pose_priors else None
    mrn = model.mrn
    mrn.train()
    opt = torch.optim.AdamW(mrn.parameters(), lr=args.lr, weight_decay=1e-4)
    step, spent = 0, 0.0
    state_path = out / "mrn_state.pt"
    if args.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        mrn.load_state_dict(state["mrn"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state["spent"]
        log(f"resumed at step {step}")
    log(f"MRN parameters: {count_parameters(mrn)}; crops {crops['meta']['count']} (targets: PSEUDO alpha)")
    t_start = time.time() - spent
    running: dict[str, float] = {}
    n = crops["meta"]["count"]

    def save(final: bool = False) -> None:
        torch.save({"mrn": mrn.state_dict(), "opt": opt.state_dict(), "step": step,
                    "spent": time.time() - t_start}, state_path)
        record = {"mrn_steps": step, "mrn_minutes_wall": round((time.time() - t_start) / 60, 1),
                  "mrn_target": "pseudo alpha (closed-form matting in a band around binary masks)",
                  "mrn_init": str(args.iscn) if args.init_mrn else "fresh",
                  "mrn_inputs": {"pose_priors": priors is not None, "min_scale": args.min_scale,
                                 **({"synth": str(args.synth)} if args.synth else {})}}
        full_meta = dict(meta)
        if isinstance(meta.get("mrn"), dict):
            # Started from an assembled checkpoint: its MRN record describes the MRN this run replaces.
            full_meta["mrn"] = record
        else:
            full_meta.update(record)
        save_checkpoint(model, out / "dfimat-s.pt", full_meta)
        log(f"saved step {step}{' (final)' if final else ''}")

    while step < args.steps:
        elapsed = time.time() - t_start
        if args.max_minutes and elapsed > args.max_minutes * 60:
            log("time budget reached")
            break
        progress = min(1.0, max(step / args.steps, elapsed / (args.max_minutes * 60) if args.max_minutes else 0.0))
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr
        x, target = _batch(crops, coarse, rng.integers(0, n, args.batch), rng, priors, args.min_scale)
        pred = mrn(x)
        l_final = hard_l1_loss(pred["alpha"], target)
        l_os4 = hard_l1_loss(pred["alpha_os4"], target)
        loss = l_final + 0.5 * l_os4
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mrn.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            coarse_l1 = float((x[:, 3:4] - target).abs().mean())
        parts = {"loss": float(loss.detach()), "l1": float((pred["alpha"] - target).abs().mean().detach()),
                 "coarse_l1": coarse_l1}
        for k, v in parts.items():
            running[k] = 0.9 * running.get(k, v) + 0.1 * v
        if step % args.log_every == 0:
            log(f"step {step} lr {lr:.2e} " + " ".join(f"{k} {v:.4f}" for k, v in running.items())
                + f" | {(time.time() - t_start) / step:.2f} s/step")
        if step % args.save_every == 0:
            save()
    save(final=True)
    return 0


def add_mrn_parser(sub) -> None:

    p = sub.add_parser("mrn", help="stage 2: train the MRN on pseudo-alpha crops with the ISCN frozen")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--iscn", type=Path, default=REPO / "runs" / "iscn" / "dfimat-s-iscn.pt")
    p.add_argument("--iscn-cache", type=Path, nargs="+", default=[DEFAULT_CACHE / "iscn-384"],
                   help="feature caches holding the training photos (the ISCN's coarse masks are computed from them)")
    p.add_argument("--synth", type=Path, default=None,
                   help="also crop every target of the synthetic composites under this folder (train split)")
    p.add_argument("--crops", type=Path, default=DEFAULT_CACHE / "mrn-320")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "mrn")
    p.add_argument("--side", type=int, default=320)
    p.add_argument("--margin", type=float, default=0.15)
    p.add_argument("--limit", type=int, default=800, help="at most this many training people get a crop")
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--init-mrn", action="store_true", help="start from the MRN in --iscn's checkpoint (fine-tuning)")
    p.add_argument("--min-scale", type=float, default=1.0,
                   help="shrink half of the batches by a factor in [this, 1] (small people reach the MRN small)")
    p.add_argument("--pose-priors", action="store_true",
                   help="also train on the ISCN's mask joined with mediapipe's pose mask, as the engine feeds it")
    add_run_arguments(p, steps=3000, minutes=20.0, batch=4, lr=0.0005)
    p.set_defaults(func=train_mrn)
