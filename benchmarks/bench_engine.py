"""Engine timings: first round (encode + predict) and refinement rounds at ~1 MP, plus peak memory.

    python benchmarks/bench_engine.py [--weights PATH] [--threads 2] [--rounds 10] [--image PATH] [--runtime torch|onnx]

Targets (issue 2): one refinement round <= 150 ms median at 1 MP on 2 CPU cores; first round <= 1.5 s. Also timed:
a first round of one click alone (the pose prior tries crops around it; `backend.runtime.pose_prior`) and a first round of
text alone (the people finder and text grounding run once per image; `backend.runtime.grounding`), and every person
at once (`backend.runtime.people.matte_people`: the finder, then one matte per person found) on ``--people-image``
(default: a coco128-persons photo of seven people, else the main photo) at the same size.
The photo defaults to a Penn-Fudan image from ../shared/data resized to 1 MP (any photo with people works).
The engine's options come from the environment (`EngineOptions.from_env`, e.g. DFIMAT_FINDER=nets).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.runtime.engine import Engine  # noqa: E402


def default_photo() -> Path | None:
    """The first Penn-Fudan image of the shared data, if this machine has it."""
    candidates = sorted((REPO.parent / "shared" / "data" / "pennfudan-sample" / "images").glob("*"))
    return candidates[0] if candidates else None


def photo(path: Path | None, megapixels: float) -> np.ndarray:
    """A real photo with people (`default_photo()` unless `path`), resized to `megapixels`; noise without one."""
    path = path or default_photo()
    if path is None:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (750, 1333, 3), dtype=np.uint8)
    else:
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    s = (megapixels * 1e6 / (image.shape[0] * image.shape[1])) ** 0.5
    return cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)), interpolation=cv2.INTER_CUBIC)


def six_people_photo() -> Path | None:
    """A coco128-persons photo with seven labelled people (six of them over 1 % of it), if this machine has the shared data."""
    path = REPO.parent / "shared" / "data" / "coco128-persons" / "images" / "000000000308.jpg"
    return path if path.is_file() else None


def first_rounds(engine: Engine, image: np.ndarray, prompts: dict, repeats: int = 3) -> list[float]:
    """Seconds for `repeats` fresh sessions' first round (encode + predict) with `prompts`."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sid = engine.open(image)
        engine.predict(sid, prompts)
        times.append(time.perf_counter() - t0)
        engine.close(sid)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--image", type=Path, default=None)
    p.add_argument("--megapixels", type=float, default=1.0)
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--people-image", type=Path, default=None, help="photo for the every-person timing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = Engine.load(device="cpu", weights=args.weights, runtime=args.runtime)
    image = photo(args.image, args.megapixels)
    h, w = image.shape[:2]
    box = [0.3 * w, 0.15 * h, 0.6 * w, 0.95 * h]
    # Warm-up session: the first call of every torch op pays one-off costs a user pays once per process.
    warm = engine.open(image)
    engine.predict(warm, {"box": box})
    engine.reset(warm)
    engine.predict(warm, {"text": "the person on the left"})  # loads the text encoder and the people finder
    engine.close(warm)

    firsts, rounds = [], []
    rng = np.random.default_rng(0)
    for _ in range(3):
        t0 = time.perf_counter()
        sid = engine.open(image)
        engine.predict(sid, {"box": box})
        firsts.append(time.perf_counter() - t0)
        for _ in range(args.rounds):
            x, y = rng.uniform(0.3 * w, 0.6 * w), rng.uniform(0.2 * h, 0.9 * h)
            t0 = time.perf_counter()
            engine.predict(sid, {"clicks": [[float(x), float(y), bool(rng.random() < 0.5)]]})
            rounds.append(time.perf_counter() - t0)
        engine.close(sid)
    # A first round of one click: the pose prior may try up to twelve crops around it (`backend.runtime.pose_prior`).
    clicks = first_rounds(engine, image, {"clicks": [[0.45 * w, 0.5 * h, True]]})
    texts = first_rounds(engine, image, {"text": "the person on the left"})
    from backend.runtime.people import matte_people

    crowd = photo(args.people_image or six_people_photo() or args.image, args.megapixels)
    matte_people(engine, crowd, {}, every_person=True)  # warm the finder on this photo's sizes
    everyone, found = [], 0
    for _ in range(3):
        t0 = time.perf_counter()
        found = len(matte_people(engine, crowd, {}, every_person=True))
        everyone.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "image": f"{w}x{h}", "threads": args.threads, "runtime": engine.runtime,
        "first_round_ms_median": round(1000 * float(np.median(firsts)), 1),
        "round_ms_median": round(1000 * float(np.median(rounds)), 1),
        "round_ms_p90": round(1000 * float(np.percentile(rounds, 90)), 1),
        "first_click_round_ms_median": round(1000 * float(np.median(clicks)), 1),
        "first_text_round_ms_median": round(1000 * float(np.median(texts)), 1),
        "every_person_ms_median": round(1000 * float(np.median(everyone)), 1), "every_person_mattes": found,
        "finder": engine.options.finder,
        "peak_rss_mb": round(peak_mb, 1),
        "targets": {"round_ms_median": 150, "first_round_ms": 1500},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
