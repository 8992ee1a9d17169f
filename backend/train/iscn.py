"""Stage 1: train the ISCN heads on cached backbone features with simulated multi-round users.

Per step, for every sample: pick a target person and a mode (box / clicks / scribbles / text / mixed; "all-people"
photos only ever get a box, since their one label is everyone), simulate round 1 from the ground truth
(`backend.data.simulate`), run 0-2 rounds without gradients whose corrective clicks/scribbles go to the most significant
error of the model's own prediction (the CRM sees the previous prediction), then one round with gradients (Eq. 6).
Everything happens in the 384 px letterboxed model square.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from backend.dfimat.encoder import Letterbox
from backend.dfimat.iscn import best_mask
from backend.dfimat.losses import iscn_loss
from backend.dfimat.model import DFIMatConfig, DFIMatS, count_parameters, load_checkpoint, save_checkpoint
from backend.dfimat.prompt_tensors import build_prompt_tensors, collate
from backend.dfimat.prompts import Box, PromptHistory, RoundPrompts
from backend.dfimat.selector import QuerySelector, select_mask
from backend.train.cache import IGNORE, open_cache
from backend.train.runs import DEFAULT_CACHE, REPO, add_run_arguments, start_run

MODES = ("box", "clicks", "scribbles", "text", "mixed")
MODE_WEIGHTS = (0.25, 0.3, 0.15, 0.1, 0.2)
# A user's rectangle in GIMP or Krita is rarely tight: `--loose-boxes P` gives that share of box rounds a box whose
# every side is moved out by up to LOOSE_BOX_MAX of its size (the committed weights saw only +-8 % jitter and lose
# 0.07 IoU to 15 % looser boxes; docs/experiments.md, "Boxes").
LOOSE_BOX_MAX = 0.3


def compute_texts(cache_dir: Path, cache: dict, log) -> list[list[list[str]]]:
    """Generated referring expressions per cached row and target (cached in texts.json)."""
    path = cache_dir / "texts.json"
    if path.is_file():
        return json.loads(path.read_text())
    try:
        from backend.runtime.refexpr import expressions
    except ImportError:
        log("backend.runtime.refexpr not available: text mode disabled for this run")
        return [[] for _ in cache["meta"]["entries"]]
    out: list[list[list[str]]] = []
    t0 = time.time()
    for i, entry in enumerate(cache["meta"]["entries"]):
        if entry["box_only"]:
            out.append([])
            continue
        lab = np.asarray(cache["labels"][i])
        masks = [lab == k + 1 for k in range(entry["targets"])]
        try:
            out.append([list(e) for e in expressions(masks, np.asarray(cache["images"][i]))])
        except ValueError as exc:  # an expression generator refusing odd masks must not stop training
            log(f"no expressions for {entry['key']}: {exc}")
            out.append([[] for _ in masks])
    path.write_text(json.dumps(out))
    log(f"expressions for {len(out)} rows in {time.time() - t0:.0f}s")
    return out


def loose_box(box: Box, shape: tuple[int, int], rng: np.random.Generator) -> Box:
    """`box` with each side moved out by a uniform share (0 to `LOOSE_BOX_MAX`) of its size, kept in the image."""
    h, w = shape
    dx0, dx1, dy0, dy1 = rng.uniform(0.0, LOOSE_BOX_MAX, 4)
    return box.grown(dx0, dy0, dx1, dy1, w, h)


class Sampler:
    """Draws training samples (cache row, target, round-1 prompts) and simulates later rounds."""

    def __init__(self, caches: list[dict], texts: list[list[list[list[str]]]], rng: np.random.Generator,
                 loose_boxes: float = 0.0, others: float = 0.0, spare_marked: bool = False) -> None:
        self.caches, self.texts, self.rng = caches, texts, rng
        self.loose_boxes = loose_boxes
        self.others = others
        self.spare_marked = spare_marked
        self.rows = [(c, r) for c, cache in enumerate(caches) for r in range(cache["meta"]["count"])]

    def draw(self) -> dict:
        rng = self.rng
        c, r = self.rows[int(rng.integers(len(self.rows)))]
        cache = self.caches[c]
        entry = cache["meta"]["entries"][r]
        k = int(rng.integers(entry["targets"]))
        lab = np.asarray(cache["labels"][r])
        gt = lab == k + 1
        ignore = lab == IGNORE
        exprs = self.texts[c][r][k] if self.texts[c][r] else []
        mode = "box" if entry["box_only"] else str(rng.choice(MODES, p=MODE_WEIGHTS))
        text = str(rng.choice(exprs)) if exprs else None
        if mode == "text" and text is None:
            mode = "box"
        from backend.data import simulate

        if mode == "clicks":
            first = RoundPrompts(clicks=tuple(simulate.first_clicks(gt, int(rng.integers(1, 4)), rng)))
        elif mode == "box" and self.loose_boxes > 0 and rng.random() < self.loose_boxes:
            first = RoundPrompts(box=loose_box(simulate.box_from_mask(gt), gt.shape, rng))
        elif mode == "box":
            jitter = 0.08 if rng.random() < 0.5 else 0.0
            first = RoundPrompts(box=simulate.box_from_mask(gt, rng, jitter))
        else:
            first = simulate.simulate_first_round(mode, gt, rng, text if mode in ("text", "mixed") else None)
        history = PromptHistory()
        history.add(first)
        others = None
        if self.others > 0 and entry["targets"] > 1 and rng.random() < self.others:
            # The engine's `others_input`: the finder's other people as negative regions, on the G x G grid.
            marks = [(c.x, c.y) for c in first.clicks if c.positive] \
                + [xy for line in first.scribbles if line.positive for xy in line.points] if self.spare_marked else ()
            found = simulate.found_others(lab, k + 1, rng, IGNORE, marks).astype(np.float32)
            g = gt.shape[0] // 4
            others = (cv2.resize(found, (g, g), interpolation=cv2.INTER_AREA) >= 0.5).astype(np.float32)
        return {"cache": c, "row": r, "gt": gt, "ignore": ignore, "mode": mode, "history": history, "last": first,
                "others": others}

    def next_round(self, sample: dict, pred: np.ndarray) -> None:
        from backend.data import simulate

        rng = self.rng
        kind = "clicks" if rng.random() < 0.6 else "scribbles"
        n = int(rng.integers(1, 4)) if kind == "clicks" else int(rng.integers(1, 3))
        if kind == "clicks":
            new = RoundPrompts(clicks=tuple(simulate.next_clicks(sample["gt"], pred, n, rng, sample["ignore"])))
        else:
            new = RoundPrompts(scribbles=tuple(simulate.next_scribbles(sample["gt"], pred, n, rng,
                                                                       ignore=sample["ignore"])))
        sample["history"].add(new)
        sample["last"] = new


def _batch_feats(caches: list[dict], samples: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([np.asarray(caches[s["cache"]][k][s["row"]]) for s in samples])).float()
            for k in ("s4", "s8", "s16", "s32")}


def round_batch(samples: list[dict], size: int, embed, others: bool = True) -> dict[str, torch.Tensor]:
    """The samples' prompt histories as one collated ISCN input (model square coordinates); `others` False leaves
    the samples' found other people out."""
    square = Letterbox(size, size, size)
    return collate([build_prompt_tensors(s["history"], s["last"], square, embed, s.get("others") if others else None)
                    for s in samples], size)


def run_round(model: DFIMatS, feats: dict, samples: list[dict], prev: torch.Tensor, has_prev: torch.Tensor,
              size: int, embed, others: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    return model.iscn(feats, round_batch(samples, size, embed, others), prev, has_prev)


def marks_led(sample: dict) -> bool:
    """Whether the engine would send this sample's first round to the marks ISCN: no box and no text."""
    first = sample["history"].rounds[0]
    return first.box is None and first.text is None


def earlier_rounds(model: DFIMatS, feats: dict, samples: list[dict], sampler: Sampler, rounds: int, size: int,
                   embed, selector: QuerySelector | None = None,
                   first_iscn: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `rounds` no-gradient rounds whose corrections go to the model's own errors; returns the last round's
    prediction (B, 1, G, G) and has_prev (B,) for the round that follows. `selector` picks each round's mask as
    inference would (None: the concept classifier).

    `first_iscn` (a frozen marks ISCN) answers the first round of marks-led samples, seeing their other people, as
    the engine's `marks_iscn=first` does; `model` then sees no other people in any round, so it learns to carry on
    from the marks ISCN's answer instead of from its own."""
    g = size // 4
    prev = torch.zeros(len(samples), 1, g, g)
    has_prev = torch.zeros(len(samples), dtype=torch.bool)
    with torch.no_grad():
        for i in range(rounds):
            batch = round_batch(samples, size, embed, others=first_iscn is None)
            masks, logits = model.iscn(feats, batch, prev, has_prev)
            prob = select_mask(selector, masks, logits, batch["dense"], prev, has_prev).sigmoid().unsqueeze(1)
            led = torch.tensor([first_iscn is not None and i == 0 and marks_led(s) for s in samples])
            if bool(led.any()):
                helper = round_batch(samples, size, embed)
                h_masks, h_logits = first_iscn(feats, helper, prev, has_prev)
                h_prob = select_mask(selector, h_masks, h_logits, helper["dense"], prev, has_prev).sigmoid()
                prob = torch.where(led[:, None, None, None], h_prob.unsqueeze(1), prob)
            big = F.interpolate(prob, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
            for s, p in zip(samples, big, strict=True):
                sampler.next_round(s, p > 0.5)
            prev, has_prev = prob, torch.ones(len(samples), dtype=torch.bool)
    return prev, has_prev


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def train_iscn(args: argparse.Namespace) -> int:

    out, rng, log = start_run(args)

    caches = [open_cache(Path(p)) for p in args.cache]
    size = caches[0]["meta"]["size"]
    texts = [compute_texts(Path(p), c, log) for p, c in zip(args.cache, caches, strict=True)]
    from backend.dfimat.text import TextEncoder

    encoder = TextEncoder()
    all_texts = sorted({t for per_cache in texts for row in per_cache for tgt in row for t in tgt})
    if all_texts:
        encoder.embed_many(all_texts)
    log(f"rows {sum(c['meta']['count'] for c in caches)}, expressions {len(all_texts)}")

    config = DFIMatConfig(size=size)
    model = DFIMatS(config)
    frozen = frozen_parts(model.iscn, args.train_only)
    params = [p for p in model.iscn.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    step, spent = 0, 0.0
    state_path = out / "iscn_state.pt"
    if args.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.iscn.load_state_dict(state["iscn"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state["spent"]
        rng = np.random.default_rng(args.seed + step)
        log(f"resumed at step {step} ({spent / 60:.1f} min spent)")
    elif args.init is not None:
        # Continued training: trained ISCN weights, a fresh optimiser and schedule (warm-up included).
        load_iscn_into(model, args.init)
        log(f"ISCN initialised from {args.init}")
    log(f"ISCN trainable parameters: {count_parameters(model.iscn, True)}"
        + (f" (frozen: {', '.join(frozen)})" if frozen else ""))
    sampler = Sampler(caches, texts, rng, args.loose_boxes, args.others, args.spare_marked)
    first_iscn = None
    if args.first_round_iscn is not None:
        first_iscn = load_marks_iscn(args.first_round_iscn)
        log(f"first rounds of marks-led samples answered by the frozen ISCN of {args.first_round_iscn}")
    t_start = time.time() - spent
    running: dict[str, float] = {}

    def save(final: bool = False) -> None:
        torch.save({"iscn": model.iscn.state_dict(), "opt": opt.state_dict(), "step": step,
                    "spent": time.time() - t_start}, state_path)
        meta = {"stage": "iscn", "steps": step, "cpu_minutes_wall": round((time.time() - t_start) / 60, 1),
                "batch": args.batch, "caches": [str(p) for p in args.cache],
                "init": None if args.init is None else str(args.init), "loose_boxes": args.loose_boxes,
                "others": args.others,
                "spare_marked": args.spare_marked,
                "first_round_iscn": None if first_iscn is None else str(args.first_round_iscn),
                "keep_weight": args.keep_weight, "keep_from_iou": args.keep_from_iou, "train_only": args.train_only,
                "earlier_rounds": list(args.earlier_rounds)}
        save_checkpoint(model, out / "dfimat-s-iscn.pt", meta)
        log(f"saved step {step}{' (final)' if final else ''}")

    model.iscn.train()
    while step < args.steps:
        elapsed = time.time() - t_start
        if args.max_minutes and elapsed > args.max_minutes * 60:
            log("time budget reached")
            break
        progress = min(1.0, max(step / args.steps, elapsed / (args.max_minutes * 60) if args.max_minutes else 0.0))
        warm = min(1.0, (step + 1) / 100)
        lr = args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr

        samples = [sampler.draw() for _ in range(args.batch)]
        feats = _batch_feats(caches, samples)
        extra = int(rng.choice(args.earlier_rounds))
        prev, has_prev = earlier_rounds(model, feats, samples, sampler, extra, size, encoder.embed,
                                        first_iscn=first_iscn)
        masks, logits = run_round(model, feats, samples, prev, has_prev, size, encoder.embed,
                                  others=first_iscn is None)
        gt = torch.from_numpy(np.stack([s["gt"] for s in samples])).float().unsqueeze(1)
        ign = torch.from_numpy(np.stack([s["ignore"] for s in samples])).float().unsqueeze(1)
        target = F.avg_pool2d(gt, 4)[:, 0]
        weight = (F.max_pool2d(ign, 4)[:, 0] < 0.5).float()
        if args.keep_weight > 0:
            weight = weight * keep_weights(prev, has_prev & (prev_ious(prev, target, weight) >= args.keep_from_iou),
                                           target, args.keep_weight)
        loss, parts = iscn_loss(masks, logits, target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1

        with torch.no_grad():
            pred = best_mask(masks, logits) > 0
            ious = [iou(p.numpy(), t.numpy() > 0.5) for p, t in zip(pred, target, strict=True)]
        parts.update(loss=float(loss.detach()), iou=float(np.mean(ious)), rounds=extra + 1)
        for k, v in parts.items():
            running[k] = 0.9 * running.get(k, v) + 0.1 * v
        if step % args.log_every == 0:
            rate = (time.time() - t_start) / max(step, 1)
            log(f"step {step} lr {lr:.2e} " + " ".join(f"{k} {v:.3f}" for k, v in running.items())
                + f" | {rate:.2f} s/step")
        if step % args.save_every == 0:
            save()
    save(final=True)
    return 0


def keep_weights(prev: torch.Tensor, has_prev: torch.Tensor, target: torch.Tensor, extra: float) -> torch.Tensor:
    """Per-pixel loss weights (B, G, G): 1 + `extra` where the previous round (prev (B, 1, G, G), has_prev (B,)) was
    already right at 0.5, else 1. Why: a corrective click is about the part it is on; the plain loss lets a round
    trade pixels it had right far from the click for the corrected part, which the user sees as the click making the
    matte worse (issue #21's rounds losing IoU)."""
    right = (prev[:, 0] > 0.5) == (target > 0.5)
    return 1.0 + extra * (right & has_prev.view(-1, 1, 1)).float()


def prev_ious(prev: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per sample (B,), the IoU of the previous round's mask (prev (B, 1, G, G) at 0.5) with the target (B, G, G) at
    0.5 over the pixels `weight` (B, G, G) counts."""
    pred, true, counted = prev[:, 0] > 0.5, target > 0.5, weight > 0
    inter = (pred & true & counted).flatten(1).sum(1).float()
    union = ((pred | true) & counted).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))


def frozen_parts(iscn: torch.nn.Module, train_only: tuple[str, ...] | None) -> list[str]:
    """Freeze every top-level part of `iscn` not named in `train_only` (None: train all); returns the frozen names."""
    if train_only is None:
        return []
    names = [name for name, _ in iscn.named_children()]
    unknown = sorted(set(train_only) - set(names))
    if unknown:
        raise SystemExit(f"--train-only: no ISCN part named {', '.join(unknown)} (parts: {', '.join(names)})")
    frozen = [name for name in names if name not in train_only]
    for name in frozen:
        for param in getattr(iscn, name).parameters():
            param.requires_grad_(False)
    return frozen


def load_iscn_into(model: DFIMatS, path: Path) -> None:
    """Copy ISCN weights from a DFIMat-S checkpoint into `model`."""
    trained, _ = load_checkpoint(path)
    model.iscn.load_state_dict(trained.iscn.state_dict())


def load_marks_iscn(path: Path) -> torch.nn.Module:
    """The frozen ISCN of a checkpoint for `--first-round-iscn`: its marks ISCN when it carries one, else its ISCN."""
    trained, _ = load_checkpoint(path)
    iscn = trained.iscn_marks if trained.iscn_marks is not None else trained.iscn
    iscn.eval()
    for param in iscn.parameters():
        param.requires_grad_(False)
    return iscn


def _round_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated round counts, got {text!r}") from None
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"round counts must be >= 0, got {text!r}")
    return counts


def add_iscn_parser(sub) -> None:

    p = sub.add_parser("iscn", help="stage 1: train the ISCN heads on cached features")
    p.add_argument("--cache", type=Path, nargs="+", default=[DEFAULT_CACHE / "iscn-384"])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "iscn")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this DFIMat-S checkpoint's ISCN weights (ignored with --resume)")
    p.add_argument("--earlier-rounds", type=_round_counts, default=(0, 0, 0, 1, 2),
                   help="comma-separated counts drawn per sample of no-gradient corrective rounds before the trained "
                        "one (default 0,0,0,1,2)")
    p.add_argument("--loose-boxes", type=float, default=0.0,
                   help="share of box rounds whose box is a user-like loose rectangle (default 0: tight +-8 %%)")
    p.add_argument("--others", type=float, default=0.0,
                   help="share of samples with other people whose found masks (as the people finder would give "
                        "them) join the negative marks' channel (the engine's others_input; default 0)")
    p.add_argument("--spare-marked", action="store_true",
                   help="with --others: a person whose found rectangle holds a positive first-round mark is left "
                        "out of the others, as the engine's prompted_others leaves out every find that may be the "
                        "clicked person")
    p.add_argument("--first-round-iscn", type=Path, default=None,
                   help="a checkpoint whose (marks) ISCN, frozen, answers the first of the earlier rounds of samples "
                        "without box or text, seeing their other people (--others), as the engine's "
                        "marks_iscn=first does; the trained ISCN then never sees other people")
    p.add_argument("--keep-weight", type=float, default=0.0,
                   help="in rounds after a first one, weigh pixels the previous round already had right by 1 + this "
                        "(default 0: the plain loss)")
    p.add_argument("--keep-from-iou", type=float, default=0.0,
                   help="with --keep-weight: only where the previous round's mask already reaches this IoU (default 0: "
                        "always); a poor mask should still change a lot")
    p.add_argument("--train-only", type=lambda t: tuple(v for v in t.split(",") if v), default=None,
                   help="comma-separated ISCN parts to train (e.g. conflict,dense_encoder,sampler); the rest stay "
                        "frozen (default: all)")
    add_run_arguments(p, steps=4000, minutes=35.0, batch=8, lr=0.0004)
    p.set_defaults(func=train_iscn)
