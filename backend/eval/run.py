"""``python -m backend.eval``: simulated-user evaluation of DFIMat-S or a baseline on the person data sets.

    python -m backend.eval --data ../shared/data/coco128-persons ../shared/data/pennfudan-sample \\
        [--modes box,clicks,scribbles,text,mixed] [--method dfimat|grabcut|mediapipe] [--weights W] \\
        [--limit N] [--split all|val] [--json OUT]

Every labelled person covering at least 1 % of the image is a target (per the set's ``mask_kind``: one target per
instance; the one labelled person; or everyone together). Prompts come from ``backend.data.simulate`` with a seed per
(item, target, mode), so every method sees the same first-round prompts. Per mode:

* box — one round, IoU after the box;
* clicks — one click per round up to ``--max-clicks`` (20): IoU after 1 / 3 / 5 clicks, NoC@85 / NoC@90; stops
  early once 5 clicks are in and IoU >= 0.90;
* scribbles — 5 rounds of 2 scribbles: IoU after rounds 1 and 5;
* text — generated referring expressions (``backend.runtime.refexpr``): IoU and hit rate (IoU >= 0.5 with the target and
  higher than with any other labelled person);
* mixed — 5 rounds: text + one visual prompt, then clicks or scribbles: IoU per round.
* people (not in the default list) — "every person in this image" (`backend.runtime.people.matte_people`, what "Split
  People into Layers" and batch every-person run): one matte per found person; per target the best IoU among the
  mattes, the share of targets found (best IoU >= 0.5), and the number of mattes that match no labelled person.

Each mode's final prediction (box; 5th click; 5th round; first expression) also gets leak, boundary F (3 px) and
SAD / MSE / GRAD / CONN against the BINARY mask (labelled so: there is no alpha ground truth). Times are wall-clock
milliseconds per ``predict`` call, round 1 and later rounds apart, plus ``open`` (image encoding) per image.
Writes a JSON report and, next to it, a per-round IoU plot (PNG).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.data import (
    HELD_OUT_SETS,
    DataError,
    DataSet,
    Item,
    Targets,
    load_set,
    person_targets,
    read_image,
    split,
)
from backend.data.simulate import (
    MODES,
    ROUNDS,
    first_clicks,
    next_clicks,
    simulate_first_round,
    simulate_next_round,
)
from backend.dfimat.prompts import RoundPrompts
from backend.eval.baselines import UnsupportedPrompt, load_baseline
from backend.eval.metrics import VS_BINARY_NOTE, boundary_f, error_split, iou, leak, matting_vs_binary, noc
from backend.eval.paraphrase import paraphrase
from backend.runtime.marks import agreeing, points
from backend.runtime.people import matte_people
from backend.runtime.refexpr import expressions, reword

__all__ = ["EvalConfig", "evaluate", "summarise", "format_table", "write_plot", "main"]

METHODS = ("dfimat", "grabcut", "mediapipe")
EVAL_MODES = (*MODES, "people")
UNMATCHED_IOU = 0.3  # a matte this far from every labelled person (and not on ignore pixels) matches nobody
HIT_IOU = 0.5
STOP_IOU = 0.90
MIN_CLICKS = 5
DROP_IOU = 0.02  # a corrective round that loses more than this IoU made the matte worse (`drop_share`)
# Targets by their share of the image: held-out photos are mostly small people (median 5 %), the training data
# mostly large ones, and a single mean hides which of them a change helps.
SIZE_BINS = ((0.0, 0.03, "<3%"), (0.03, 0.10, "3-10%"), (0.10, 1.01, ">=10%"))


@dataclass
class EvalConfig:
    modes: tuple[str, ...] = MODES
    max_clicks: int = 20
    max_expressions: int = 3
    min_frac: float = 0.01
    seed: int = 0
    matting_metrics: bool = True
    reword_text: bool = False  # say every generated expression another way (backend.runtime.refexpr.reword)
    paraphrase_text: bool = False  # ... or as backend.eval.paraphrase says it (written without sight of the matcher)
    box_margin: float = 0.0  # box mode: grow the tight box by this fraction of its size on every side


@dataclass
class _Run:
    """Per-round IoUs and the final prediction of one (item, target, mode)."""

    ious: list[float] = field(default_factory=list)
    final: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _seed(base: int, *parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, (base, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big")


class _Timed:
    """Wraps a method so every predict is timed and tagged with its round number."""

    def __init__(self, method: Any, times: list[dict]) -> None:
        self.method, self.times = method, times

    def predict(self, sid: str, prompts: dict, mode: str, round_no: int) -> np.ndarray:
        t = time.perf_counter()
        alpha = self.method.predict(sid, prompts)
        self.times.append({"mode": mode, "round": round_no, "ms": 1e3 * (time.perf_counter() - t)})
        return np.asarray(alpha, np.float32)


def _count_obeyed(run: _Run, alpha: np.ndarray, prompts: RoundPrompts) -> None:
    """Add the round's marks, and how many of them the matte puts on their side, to the run's tally."""
    k, n = run.extra.get("marks_obeyed", (0, 0))
    run.extra["marks_obeyed"] = (k + agreeing(alpha, prompts), n + len(points(prompts)))


def _run_box(m: _Timed, sid: str, gt: np.ndarray, rng: np.random.Generator, ignore: np.ndarray,
             margin: float = 0.0) -> _Run:
    box = simulate_first_round("box", gt, rng).box
    if margin > 0:
        # A user's rectangle, not a tight one: every side moved out by `margin` of the box's size, kept in the image.
        box = box.grown(*(margin,) * 4, gt.shape[1], gt.shape[0])
    alpha = m.predict(sid, {"box": box.as_list()}, "box", 1)
    return _Run([iou(alpha, gt, ignore)], alpha)


def _run_clicks(m: _Timed, sid: str, gt: np.ndarray, rng: np.random.Generator, ignore: np.ndarray,
                max_clicks: int) -> _Run:
    run = _Run()
    clicks = first_clicks(gt, 1, rng)
    alpha = None
    for n in range(1, max_clicks + 1):
        if clicks:
            prompts = {"clicks": [[c.x, c.y, c.positive] for c in clicks]}
            alpha = m.predict(sid, prompts, "clicks", n)
            _count_obeyed(run, alpha, RoundPrompts(clicks=tuple(clicks)))
            # Which way each round's click pointed, to study the rounds that made the matte worse.
            run.extra.setdefault("click_signs", []).append([bool(c.positive) for c in clicks])
        # else: nothing left to correct; the prediction stands
        run.ious.append(iou(alpha, gt, ignore))
        if n == min(MIN_CLICKS, max_clicks):
            run.final = alpha
        if n >= MIN_CLICKS and run.ious[-1] >= STOP_IOU:
            break
        clicks = next_clicks(gt, alpha, 1, rng, ignore)
    if run.final is None:
        run.final = alpha
    return run


def _run_rounds(mode: str, m: _Timed, sid: str, gt: np.ndarray, rng: np.random.Generator, ignore: np.ndarray,
                text: str | None = None) -> _Run:
    run = _Run()
    prompts = simulate_first_round(mode, gt, rng, text=text)
    alpha = None
    for r in range(1, ROUNDS[mode] + 1):
        if not prompts.is_empty():
            alpha = m.predict(sid, prompts.to_dict(), mode, r)
            _count_obeyed(run, alpha, prompts)
        run.ious.append(iou(alpha, gt, ignore))
        if r < ROUNDS[mode]:
            prompts = simulate_next_round(mode, gt, alpha, rng, ignore)
    run.final = alpha
    return run


def _run_text(m: _Timed, sid: str, gt: np.ndarray, ignore: np.ndarray, texts: list[str],
              others: list[np.ndarray], reset: Callable[[], None], max_expressions: int) -> _Run | None:
    if not texts:
        return None
    run = _Run()
    hits, per_expr = [], []
    for k, text in enumerate(texts[:max_expressions]):
        if k:
            reset()
        alpha = m.predict(sid, {"text": text}, "text", 1)
        own = iou(alpha, gt, ignore)
        rivals = [iou(alpha, o, ignore) for o in others]
        hit = own >= HIT_IOU and all(own > r for r in rivals)
        hits.append(hit)
        per_expr.append({"text": text, "iou": own, "hit": hit})
        run.ious.append(own)
        if run.final is None:
            run.final = alpha
    run.extra = {"hits": hits, "expressions": per_expr}
    return run


def _scores(alpha: np.ndarray, gt: np.ndarray, others: np.ndarray, ignore: np.ndarray, matting: bool) -> dict:
    out: dict[str, Any] = {"boundary_f": boundary_f(alpha, gt, ignore)}
    # Leak needs somebody to leak into: single-person and all-people targets have no labelled neighbour.
    out["leak"] = leak(alpha, others, gt, ignore) if others.any() else None
    out["errors"] = error_split(alpha, gt, others, ignore)
    if matting:
        m = matting_vs_binary(alpha, gt, ignore)
        out.update({k: m[k] for k in ("sad", "mse", "grad", "conn")})
    return out


def _evaluate_item(method: Any, item: Item, cfg: EvalConfig, times: list[dict], records: list[dict],
                   unsupported: set[str]) -> dict:
    image = read_image(item.image_path)
    targets: Targets = person_targets(item, cfg.min_frac)
    info = {"targets": len(targets.masks), "small": len(targets.small), "open_ms": None}
    if not targets.masks:
        return info
    people = targets.people()
    texts: list[list[str]] = [[] for _ in people]
    if {"text", "mixed"} & set(cfg.modes):
        texts = expressions(people, image)
        if cfg.reword_text:
            texts = [[reword(t) for t in ts] for ts in texts]
        elif cfg.paraphrase_text:
            # The wording variant turns with person and expression, so each kind of fact meets every wording.
            texts = [[paraphrase(t, i + k) for k, t in enumerate(ts)] for i, ts in enumerate(texts)]
    if "people" in cfg.modes:
        _evaluate_people(method, item, image, targets, times, records)
    if not set(cfg.modes) - {"people"}:
        return info
    t = time.perf_counter()
    sid = method.open(image)
    info["open_ms"] = 1e3 * (time.perf_counter() - t)
    timed = _Timed(method, times)
    try:
        for i, gt in enumerate(targets.masks):
            others_union = targets.others(i)
            others = [p for j, p in enumerate(people) if j != i]
            for mode in cfg.modes:
                if mode in unsupported or mode == "people":
                    continue
                rng = np.random.default_rng(_seed(cfg.seed, item.key, i, mode))
                method.reset(sid)
                try:
                    if mode == "box":
                        run = _run_box(timed, sid, gt, rng, targets.ignore, cfg.box_margin)
                    elif mode == "clicks":
                        run = _run_clicks(timed, sid, gt, rng, targets.ignore, cfg.max_clicks)
                    elif mode == "text":
                        run = _run_text(timed, sid, gt, targets.ignore, texts[i], others,
                                        lambda: method.reset(sid), cfg.max_expressions)
                    else:
                        text = texts[i][0] if mode == "mixed" and texts[i] else None
                        run = _run_rounds(mode, timed, sid, gt, rng, targets.ignore, text)
                except UnsupportedPrompt:
                    unsupported.add(mode)
                    continue
                record = {"set": item.set_name, "item": item.id, "target": i, "mode": mode,
                          "area_frac": float(gt.mean()), "all_people": targets.all_people}
                if run is None:
                    record["skipped"] = "no generated expression singles this person out"
                else:
                    record["ious"] = run.ious
                    record.update(run.extra)
                    record.update(_scores(run.final, gt, others_union, targets.ignore, cfg.matting_metrics))
                    if callable(getattr(method, "rules", None)):
                        # Which of the engine's rules shaped each round's answer (`Engine.rules`).
                        record["rules"] = [list(r) for r in method.rules(sid)]
                records.append(record)
    finally:
        method.close(sid)
    return info


def _evaluate_people(method: Any, item: Item, image: np.ndarray, targets: Targets, times: list[dict],
                     records: list[dict]) -> None:
    """Mode people: one matte per found person; a record per target (best IoU over the mattes), the image's matte
    count and unmatched count on its first target's record."""
    t = time.perf_counter()
    mattes = [alpha >= 0.5 for _, alpha in matte_people(method, image, {}, every_person=True)]
    times.append({"mode": "people", "round": 1, "ms": 1e3 * (time.perf_counter() - t)})
    # matte x labelled person; targets come first in `people()`, so column i is target i.
    table = [[iou(m, p, targets.ignore) for p in targets.people()] for m in mattes]
    unmatched = sum(1 for m, row in zip(mattes, table, strict=True)
                    if max(row, default=0.0) < UNMATCHED_IOU and (m & targets.ignore).sum() <= 0.5 * m.sum())
    for i, gt in enumerate(targets.masks):
        record = {"set": item.set_name, "item": item.id, "target": i, "mode": "people", "area_frac": float(gt.mean()),
                  "all_people": targets.all_people, "ious": [max((row[i] for row in table), default=0.0)]}
        if i == 0:
            record.update({"mattes": len(mattes), "unmatched": unmatched})
        records.append(record)


def evaluate(method: Any, sets: Sequence[tuple[DataSet, Sequence[Item]]], cfg: EvalConfig,
             log: Callable[[str], None] = lambda s: None) -> dict:
    """Run the protocol over ``sets`` (each a data set and the items to use) and return the JSON-ready report."""
    times: list[dict] = []
    records: list[dict] = []
    unsupported: set[str] = set()
    data_info, opens, errors = [], [], []
    for ds, items in sets:
        n_targets = n_small = 0
        for k, item in enumerate(items):
            try:
                info = _evaluate_item(method, item, cfg, times, records, unsupported)
            except (DataError, ValueError, KeyError) as exc:
                errors.append({"item": item.key, "error": f"{type(exc).__name__}: {exc}"})
                log(f"  {item.key}: {type(exc).__name__}: {exc}")
                continue
            n_targets += info["targets"]
            n_small += info["small"]
            if info["open_ms"] is not None:
                opens.append(info["open_ms"])
            log(f"  {ds.name} {k + 1}/{len(items)} {item.id}: {info['targets']} target(s)")
        data_info.append({"name": ds.name, "root": str(ds.root), "mask_kind": ds.mask_kind, "license": ds.license,
                          "items": len(items), "targets": n_targets, "small_persons_not_targets": n_small,
                          "held_out_from_training": ds.name in HELD_OUT_SETS})
    report = {
        "data": data_info,
        "settings": {"modes": list(cfg.modes), "max_clicks": cfg.max_clicks, "max_expressions": cfg.max_expressions,
                     "min_frac": cfg.min_frac, "seed": cfg.seed, "box_margin": cfg.box_margin,
                     "reword_text": cfg.reword_text, "paraphrase_text": cfg.paraphrase_text},
        "matting_reference": VS_BINARY_NOTE,
        "unsupported_modes": sorted(unsupported),
        "summary": summarise(records, times, opens, cfg, unsupported),
        "records": records,
        "errors": errors,
    }
    return report


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def iou_after(ious: list[float], n: int) -> float:
    """IoU after ``n`` rounds; runs that stopped early keep their last value."""
    return ious[min(n, len(ious)) - 1]


def _curve(runs: list[list[float]], length: int) -> list[float]:
    return [float(np.mean([iou_after(r, n) for r in runs])) for n in range(1, length + 1)] if runs else []


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None, "n": 0}
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)), "n": len(values)}


def final_iou(mode: str, ious: list[float], max_clicks: int) -> float:
    """A run's headline IoU: after the box, the 5th click (or the last one given), the last round; for text the
    mean over its expressions; for people the best matte."""
    if mode == "clicks":
        return iou_after(ious, min(MIN_CLICKS, max_clicks))
    if mode == "text":
        return float(np.mean(ious))
    return ious[0] if mode in ("box", "people") else ious[-1]


def by_size(mode: str, recs: list[dict], max_clicks: int) -> list[dict]:
    """Per `SIZE_BINS` bin: targets, mean headline IoU (`final_iou`) and median leak."""
    out = []
    for lo, hi, label in SIZE_BINS:
        part = [r for r in recs if lo <= r["area_frac"] < hi]
        out.append({"bin": label, "n": len(part),
                    "iou": _mean([final_iou(mode, r["ious"], max_clicks) for r in part]),
                    "leak_median": _median([r.get("leak") for r in part])})
    return out


def drop_share(runs: Sequence[Sequence[float]], by: float = DROP_IOU) -> float | None:
    """Share of corrective rounds (round 2 on) whose IoU is more than ``by`` below the round before: how often a
    correction made the matte worse."""
    steps = [(a, b) for r in runs for a, b in zip(r[:-1], r[1:], strict=True)]
    return sum(1 for a, b in steps if b < a - by) / len(steps) if steps else None


def summarise(records: list[dict], times: list[dict], opens: list[float], cfg: EvalConfig,
              unsupported: set[str] = frozenset()) -> dict:
    """Per-mode means of the per-target records, plus timing."""
    out: dict[str, Any] = {}
    for mode in cfg.modes:
        if mode in unsupported:
            out[mode] = {"n": 0, "status": "n/a (method does not support this prompt type)"}
            continue
        recs = [r for r in records if r["mode"] == mode and "ious" in r]
        s: dict[str, Any] = {"n": len(recs)}
        runs = [r["ious"] for r in recs]
        if mode == "box":
            s["iou"] = _mean([r[0] for r in runs])
        elif mode == "people":
            s["iou"] = _mean([r[0] for r in runs])
            s["found"] = _mean([float(r[0] >= HIT_IOU) for r in runs])
            s["mattes"] = sum(r.get("mattes", 0) for r in recs)
            s["unmatched"] = sum(r.get("unmatched", 0) for r in recs)
            images = sum(1 for r in recs if "mattes" in r)
            s["false_per_image"] = s["unmatched"] / images if images else None
        elif mode == "clicks":
            for n in (1, 3, 5):
                s[f"iou@{n}"] = _mean([iou_after(r, n) for r in runs])
            s["noc85"] = _mean([noc(r, 0.85, cfg.max_clicks) for r in runs])
            s["noc90"] = _mean([noc(r, 0.90, cfg.max_clicks) for r in runs])
            s["curve"] = _curve(runs, cfg.max_clicks)
            s["drops"] = drop_share(runs)
        elif mode == "text":
            hits = [h for r in recs for h in r["hits"]]
            s["iou"] = _mean([v for r in runs for v in r])
            s["hit_rate"] = _mean([float(h) for h in hits])
            s["expressions"] = len(hits)
            s["targets_without_expression"] = sum(1 for r in records if r["mode"] == mode and "skipped" in r)
        else:
            s["curve"] = _curve(runs, ROUNDS[mode])
            s["iou@1"] = s["curve"][0] if runs else None
            s[f"iou@{ROUNDS[mode]}"] = s["curve"][-1] if runs else None
        if mode in ("clicks", "scribbles", "mixed"):
            kept = sum(r.get("marks_obeyed", (0, 0))[0] for r in recs)
            total = sum(r.get("marks_obeyed", (0, 0))[1] for r in recs)
            s["marks_obeyed"] = kept / total if total else None
        for key in ("leak", "boundary_f", "sad", "mse", "grad", "conn"):
            s[key] = _mean([r.get(key) for r in recs])
        s["leak_n"] = sum(1 for r in recs if r.get("leak") is not None)
        split = [r["errors"] for r in recs if "errors" in r]
        if split:
            s["error_split"] = {k: _mean([e[k] for e in split]) for k in split[0]}
        s["leak_median"] = _median([r.get("leak") for r in recs])
        s["by_size"] = by_size(mode, [r for r in recs if r["ious"]], cfg.max_clicks)
        mode_times = [t["ms"] for t in times if t["mode"] == mode]
        s["ms"] = _ms(mode_times)
        s["ms_round1"] = _ms([t["ms"] for t in times if t["mode"] == mode and t["round"] == 1])
        s["ms_later"] = _ms([t["ms"] for t in times if t["mode"] == mode and t["round"] > 1])
        out[mode] = s
    out["timing"] = {
        "open_ms": _ms(opens),
        "round1_ms": _ms([t["ms"] for t in times if t["round"] == 1]),
        "refine_ms": _ms([t["ms"] for t in times if t["round"] > 1]),
    }
    return out


def _f(value: float | None, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    return "n/a" if value is None else fmt.format(value * scale)


def format_table(report: dict, title: str = "") -> str:
    """The report's summary as a plain-text table."""
    summary = report["summary"]
    lines = [title] if title else []
    header = (f"{'mode':<10}{'n':>5}  {'IoU':<52}{'marks%':>7}{'leak%':>7}{'bndF':>7}{'SAD':>9}{'MSEx1e3':>9}"
              f"{'GRAD':>9}{'CONN':>9}{'ms med':>9}{'ms p90':>9}")
    lines += [header, "-" * len(header)]
    for mode in report["settings"]["modes"]:
        s = summary[mode]
        if "status" in s:
            lines.append(f"{mode:<10}{0:>5}  {s['status']}")
            continue
        if mode == "box":
            iou_text = f"box {_f(s['iou'])}"
        elif mode == "clicks":
            iou_text = (f"@1 {_f(s['iou@1'])} @3 {_f(s['iou@3'])} @5 {_f(s['iou@5'])} "
                        f"NoC85 {_f(s['noc85'], '{:.1f}')} NoC90 {_f(s['noc90'], '{:.1f}')} "
                        f"drops {_f(s.get('drops'), '{:.1%}')}")
        elif mode == "text":
            iou_text = f"IoU {_f(s['iou'])} hit {_f(s['hit_rate'], '{:.0%}')} ({s['expressions']} expr)"
        elif mode == "people":
            iou_text = (f"best {_f(s['iou'])} found {_f(s['found'], '{:.0%}')} mattes {s['mattes']} "
                        f"({s['unmatched']} unmatched, {_f(s.get('false_per_image'), '{:.2f}')}/image)")
        else:
            iou_text = "rounds " + " ".join(f"{v:.3f}" for v in s["curve"])
        lines.append(
            f"{mode:<10}{s['n']:>5}  {iou_text:<52}{_f(s.get('marks_obeyed'), '{:.1f}', 100):>7}"
            f"{_f(s['leak'], '{:.2f}', 100):>7}{_f(s['boundary_f']):>7}"
            f"{_f(s['sad'], '{:.2f}'):>9}{_f(s['mse'], '{:.2f}', 1e3):>9}{_f(s['grad'], '{:.2f}'):>9}"
            f"{_f(s['conn'], '{:.2f}'):>9}{_f(s['ms']['median'], '{:.0f}'):>9}{_f(s['ms']['p90'], '{:.0f}'):>9}"
        )
    lines.append("by target size (share of the image): IoU after the box / 5th click / last round / text / best matte;"
                 " median leak %")
    for mode in report["settings"]["modes"]:
        s = summary[mode]
        if "by_size" in s:
            bins = "  ".join(f"{b['bin']} n={b['n']} {_f(b['iou'])} ({_f(b['leak_median'], '{:.1f}', 100)})"
                             for b in s["by_size"])
            lines.append(f"  {mode:<10}{bins}   all: median leak {_f(s['leak_median'], '{:.1f}', 100)}")
    split = [(mode, summary[mode]["error_split"]) for mode in report["settings"]["modes"]
             if "error_split" in summary[mode]]
    if split:
        lines.append("where the final matte is wrong, as shares of the union (IoU + these = 1): the label's and the matte's"
                     " outlines within 3 px / within 15 px / other labelled people / the rest (objects, missed parts)")
        lines += [f"  {mode:<10}outline {_f(e['outline'])}  shape {_f(e['shape'])}  other people {_f(e['others'])}"
                  f"  rest {_f(e['rest'])}" for mode, e in split]
    t = summary["timing"]
    lines.append(
        f"open (encode) ms median {_f(t['open_ms']['median'], '{:.0f}')}; round 1 ms median "
        f"{_f(t['round1_ms']['median'], '{:.0f}')}; refinement rounds ms median {_f(t['refine_ms']['median'], '{:.0f}')}"
        f" / p90 {_f(t['refine_ms']['p90'], '{:.0f}')}"
    )
    lines.append(f"SAD/MSE/GRAD/CONN (whole image, SAD and GRAD and CONN /1000): {VS_BINARY_NOTE}.")
    lines.append("marks = share of the clicks and stroke vertices the returned matte puts on their side (alpha > 0.5 "
                 "for positive ones), checked in the round each was given.")
    lines.append("leak = alpha mass on other labelled people / target area; text expressions are generated.")
    return "\n".join(lines)


def write_plot(report: dict, path: Path, title: str = "") -> Path:
    """Mean IoU per round / per click, one line per mode (like the paper's Fig. 5, with IoU instead of SAD)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    fig, (ax_clicks, ax_rounds) = plt.subplots(1, 2, figsize=(10, 4))
    if summary.get("clicks", {}).get("curve"):
        curve = summary["clicks"]["curve"]
        ax_clicks.plot(range(1, len(curve) + 1), curve, marker="o", label="clicks")
    ax_clicks.set(xlabel="number of clicks", ylabel="mean IoU", title="clicks (1 per round)", ylim=(0, 1))
    for mode in ("scribbles", "mixed"):
        if summary.get(mode, {}).get("curve"):
            curve = summary[mode]["curve"]
            ax_rounds.plot(range(1, len(curve) + 1), curve, marker="o", label=mode)
    for mode, marker in (("box", "s"), ("text", "^")):
        value = summary.get(mode, {}).get("iou")
        if value is not None:
            ax_rounds.plot([1], [value], marker=marker, linestyle="none", label=mode)
    ax_rounds.set(xlabel="interaction round", ylabel="mean IoU", title="per round", ylim=(0, 1))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_clicks, ax_rounds):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def make_method(name: str, weights: str | None = None) -> Any:
    """The method under test: the DFIMat-S engine or a baseline, all with open / predict / reset / close."""
    if name == "dfimat":
        from backend.runtime.engine import Engine

        return Engine.load(weights=weights)
    if weights:
        raise ValueError(f"--weights applies to method dfimat only, not {name}")
    return load_baseline(name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, type=Path, help="data set folders (with manifest.json)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(EVAL_MODES)} (default: all but people)")
    p.add_argument("--method", default="dfimat", choices=METHODS)
    p.add_argument("--weights", default=None, help="DFIMat-S checkpoint (default: the engine's default)")
    p.add_argument("--limit", type=int, default=None, help="at most N items per data set")
    p.add_argument("--split", choices=("all", "val"), default="all",
                   help="val: only the validation split of sets used for training (held-out sets are used whole)")
    p.add_argument("--json", type=Path, default=None, help="write the report here, and the IoU plot next to it")
    p.add_argument("--max-clicks", type=int, default=20)
    p.add_argument("--max-expressions", type=int, default=3, help="expressions tried per person in mode text")
    p.add_argument("--min-frac", type=float, default=0.01, help="smallest target, as a fraction of the image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-matting-metrics", action="store_true", help="skip SAD/MSE/GRAD/CONN (faster)")
    p.add_argument("--box-margin", type=float, default=0.0,
                   help="box mode: a looser box, each side moved out by this fraction of the box size (0.1 = 10 %%)")
    p.add_argument("--reword-text", action="store_true",
                   help="text/mixed: use hand-written rewordings of the generated expressions (backend.runtime.refexpr.reword)")
    p.add_argument("--paraphrase-text", action="store_true",
                   help="text/mixed: use the independent paraphrases of backend.eval.paraphrase instead")
    p.add_argument("--quiet", action="store_true")
    return p


def _parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in EVAL_MODES]
    if bad or not modes:
        raise ValueError(f"unknown mode(s) {bad or text!r}; choose from {','.join(EVAL_MODES)}")
    return modes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        modes = _parse_modes(args.modes)
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit must be at least 1")
        if args.max_clicks < 1:
            raise ValueError("--max-clicks must be at least 1")
        if not 0.0 <= args.box_margin <= 1.0:
            raise ValueError("--box-margin must be between 0 and 1")
        sets = []
        for root in args.data:
            ds = load_set(root)
            items = list(ds.items)
            if args.split == "val" and ds.name not in HELD_OUT_SETS:
                items = split(items)[1]
            sets.append((ds, items[: args.limit] if args.limit else items))
        method = make_method(args.method, args.weights)
    except (ValueError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = EvalConfig(modes=modes, max_clicks=args.max_clicks, max_expressions=args.max_expressions,
                     min_frac=args.min_frac, seed=args.seed, matting_metrics=not args.no_matting_metrics,
                     reword_text=args.reword_text,
                     paraphrase_text=args.paraphrase_text, box_margin=args.box_margin)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    report = evaluate(method, sets, cfg, log)
    report["method"] = args.method
    report["weights"] = args.weights
    report["text_grounding"] = getattr(method, "text_grounding", None)
    if hasattr(method, "shutdown"):
        method.shutdown()
    title = f"{args.method} on {', '.join(ds.name for ds, _ in sets)}"
    print(format_table(report, title))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        plot = write_plot(report, args.json.with_suffix(".png"), title)
        print(f"wrote {args.json} and {plot}")
    if report["errors"]:
        print(f"{len(report['errors'])} item(s) failed; see the report's errors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
