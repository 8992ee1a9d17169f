"""Batch throughput locally and on Ray, Ray's own cost per image and at start-up, and moving 24 MP photos through
Ray's object store instead of shared storage.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_batch.py --images 12

Every mode runs the real command (``python -m backend batch``, committed weights, default engine settings) on the
same photos (the first N of ../shared/data/coco128-persons, crowded real photos; copies of samples/astronaut.png
when that folder is missing) into a fresh output folder:

- ``local``: the default batch, one engine using every core;
- ``local-1t``: the same with ``OMP_NUM_THREADS=1``, i.e. what one Ray worker gets, for the per-image overhead;
- ``ray-1``, ``ray-2``: ``--ray --workers 1`` / ``2`` on a local Ray started by the command;
- ``local-1t-24mp``: ``local-1t`` on ``--big`` copies of one 24 MP (6000 x 4000) JPEG, the per-image cost at
  camera size that the scaling estimate in docs/batch.md starts from.

"processing" is the summary line's own time (first image handed out to the last one back, model loads excluded);
"start-up" is the rest of the wall time (Python and imports, Ray's start, model loads). Results go to stdout as a
table and, with --json, to a file. The transfer part starts a two-node Ray cluster on this machine (``--transfer``
off skips it) and times, for one 24 MP photo, an actor on the other node getting the encoded file or the decoded
pixels through the object store against reading the file from disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO.parent / "shared" / "data" / "coco128-persons" / "images"
SUMMARY = re.compile(r"wrote (\d+) mattes for (\d+) images .*?([\d.]+) s, ([\d.]+) img/s")


def gather_photos(n: int, dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(PHOTOS.glob("*.jpg"))[:n] if PHOTOS.is_dir() else []
    if not sources:
        sources = [REPO / "samples" / "astronaut.png"] * n
    for i, src in enumerate(sources):
        shutil.copy(src, dest / f"{i:03d}{src.suffix}")
    return len(sources)


def run_mode(name: str, photos: Path, work: Path, extra: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = work / f"out-{name}"
    cmd = [sys.executable, "-m", "backend", "batch", str(photos), "-o", str(out), *extra]
    start = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.monotonic() - start
    m = SUMMARY.search(run.stdout)
    if run.returncode != 0 or m is None:
        raise SystemExit(f"{name} failed ({run.returncode}): {run.stdout}\n{run.stderr[-3000:]}")
    masks, images, processing = int(m.group(1)), int(m.group(2)), float(m.group(3))
    ready = re.search(r"first worker ready after ([\d.]+) s", run.stderr)
    return {"mode": name, "images": images, "masks": masks, "wall_s": round(wall, 2),
            "processing_s": processing, "startup_s": round(wall - processing, 2),
            "first_worker_ready_s": float(ready.group(1)) if ready else None,
            "images_per_s": round(images / processing, 3), "masks_per_s": round(masks / processing, 3),
            "outputs": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}}


def call_overhead(calls: int) -> dict[str, float]:
    """Round trip of an empty actor call (driver -> actor -> driver), what Ray adds to each image besides the
    work; on a local Ray started here."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        @ray.remote(num_cpus=1)
        class Empty:
            def process(self, name: str) -> dict[str, Any]:
                return {"image": name, "masks": [], "size": 0}

        actor = Empty.remote()
        ray.get(actor.process.remote("warm-up"))
        times = []
        for i in range(calls):
            t = time.perf_counter()
            ray.get(actor.process.remote(f"{i:05d}.jpg"))
            times.append(time.perf_counter() - t)
        return {"median_ms": round(1000 * statistics.median(times), 3),
                "p90_ms": round(1000 * sorted(times)[int(0.9 * len(times))], 3)}
    finally:
        ray.shutdown()


def make_24mp(path: Path) -> None:
    """A 6000 x 4000 JPEG of a real photo with people (upscaled)."""
    import cv2
    import numpy as np

    source = next(iter(sorted(PHOTOS.glob("*.jpg"))), REPO / "samples" / "astronaut.png")
    big = cv2.resize(cv2.imread(str(source)), (6000, 4000), interpolation=cv2.INTER_CUBIC)
    # An upscaled photo is smooth and compresses to ~2 MB; sensor-like noise brings the JPEG to ~7 MB, near a
    # camera's 24 MP file, and that size is what crosses the network.
    noise = np.random.default_rng(0).normal(0, 6, big.shape)
    big = np.clip(big + noise, 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])


def transfer_24mp(work: Path, repeats: int) -> dict[str, Any]:
    """One 24 MP photo to an actor on the second node of a two-node cluster on this machine: through the object
    store as the encoded JPEG or as decoded pixels, against the actor reading and decoding the file itself."""
    import cv2
    import numpy as np
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    path = work / "photo-24mp.jpg"
    if not path.exists():
        make_24mp(path)
    data = path.read_bytes()
    big = cv2.imread(str(path))
    pixels = cv2.cvtColor(big, cv2.COLOR_BGR2RGB)
    mask = np.ascontiguousarray(pixels[:, :, 0])  # one 24 MP alpha coming back, as uint8

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 600 * 1024**2})
    other = cluster.add_node(num_cpus=1, object_store_memory=600 * 1024**2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        @ray.remote(num_cpus=1)
        class Reader:
            def from_bytes(self, blob: bytes) -> tuple[int, float]:
                t = time.perf_counter()
                image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
                return image.shape[0], time.perf_counter() - t

            def from_pixels(self, array: Any) -> int:
                return int(array.shape[0])

            def from_file(self, p: str) -> int:
                return cv2.imread(p, cv2.IMREAD_COLOR).shape[0]

            def give_mask(self, m: Any) -> Any:
                return m

        strategy = NodeAffinitySchedulingStrategy(other.node_id, soft=False)
        actor = Reader.options(scheduling_strategy=strategy).remote()
        ray.get(actor.from_file.remote(str(path)))

        def timed(fn) -> float:
            samples = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t)
            return round(1000 * statistics.median(samples), 1)

        decode_ms = []

        def send_bytes() -> None:
            decode_ms.append(ray.get(actor.from_bytes.remote(ray.put(data)))[1])


        def mask_back() -> None:
            # The mask is made on the driver's node here, so fetching it makes the same node-to-node trip in
            # reverse that a mask written back through Ray would.
            ray.get(actor.give_mask.remote(ray.put(mask)))

        result = {"jpeg_bytes_mb": round(len(data) / 1e6, 1), "pixels_mb": round(pixels.nbytes / 1e6, 1),
                  "file_read_and_decode_ms": timed(lambda: ray.get(actor.from_file.remote(str(path)))),
                  "jpeg_through_object_store_and_decode_ms": timed(send_bytes),
                  "pixels_through_object_store_ms": timed(lambda: ray.get(actor.from_pixels.remote(
                      ray.put(pixels)))),
                  "mask_24mp_round_trip_ms": timed(mask_back)}
        result["decode_alone_ms"] = round(1000 * statistics.median(decode_ms), 1)
        return result
    finally:
        ray.shutdown()
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--modes", default="local,local-1t,ray-1,ray-2")
    ap.add_argument("--calls", type=int, default=300, help="empty actor calls for the per-call overhead")
    ap.add_argument("--big", type=int, default=2, help="24 MP photos for the local-1t-24mp mode (0: skip it)")
    ap.add_argument("--no-transfer", action="store_true", help="skip the 24 MP object-store measurement")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(REPO)}
    extras = {"local": ([], {}), "local-1t": ([], {"OMP_NUM_THREADS": "1"}),
              "ray-1": (["--ray", "--workers", "1"], {}), "ray-2": (["--ray", "--workers", "2"], {})}
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="dfimat-bench-batch-") as tmp:
        work = Path(tmp)
        n = gather_photos(args.images, work / "photos")
        rows = []
        for mode in args.modes.split(","):
            extra, more_env = extras[mode]
            row = run_mode(mode, work / "photos", work, extra, env | more_env)
            print(f"{mode:9s} {row['images']} images {row['masks']} masks: processing {row['processing_s']:.1f} s "
                  f"({row['images_per_s']:.2f} img/s, {row['masks_per_s']:.2f} masks/s), wall {row['wall_s']:.1f} s, "
                  f"start-up {row['startup_s']:.1f} s, first worker ready {row['first_worker_ready_s']}", flush=True)
            rows.append(row)
        if args.big:
            # One engine thread per 24 MP photo: the per-image cost a worker slot pays at camera size.
            make_24mp(work / "photo-24mp.jpg")
            for i in range(args.big):
                (work / "big").mkdir(exist_ok=True)
                shutil.copy(work / "photo-24mp.jpg", work / "big" / f"{i:03d}.jpg")
            row = run_mode("local-1t-24mp", work / "big", work, [], env | {"OMP_NUM_THREADS": "1"})
            row.pop("outputs")
            results["big"] = row
            print(f"local-1t, {args.big} 24 MP photos: {row['processing_s'] / args.big:.2f} s per image, "
                  f"{row['masks']} masks", flush=True)
        same = {r["mode"]: r.pop("outputs") == rows[0]["outputs"] for r in rows[1:]}
        rows[0].pop("outputs")
        results.update(images=n, rows=rows, outputs_identical_to_first=same)
        print(f"masks and index.json byte-identical to {rows[0]['mode']}'s: {same}")
        results["empty_call"] = call_overhead(args.calls)
        print(f"empty actor call round trip: {results['empty_call']}", flush=True)
        if not args.no_transfer:
            results["transfer_24mp"] = transfer_24mp(work, repeats=5)
            print(f"24 MP through the object store (two nodes on this machine): {results['transfer_24mp']}")
    results["load_after"] = os.getloadavg()
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
