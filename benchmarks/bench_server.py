"""Speed and memory of the backend service (printed table; not a test).

Measures, through a real ``python -m backend serve`` process on loopback TCP:
- ``predict`` round-trip latency at several image sizes: the first round (open_image + predict, which encodes the
  image) and cached rounds (predict only), median and p90;
- the same work on the engine in this process, and the ratio server / in-process (overhead; ideally ≈ 1);
- batch throughput (masks per minute) for one box per item;
- the server's peak RSS (VmHWM).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_server.py --sizes 0.5,1,4,24 --repeats 5
    PYTHONPATH=. .venv/bin/python benchmarks/bench_server.py --quick      # short run, tiny random weights
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_engine import default_photo, photo  # noqa: E402
from dfimat_client import Client  # noqa: E402
from dfimat_client.config import write_token  # noqa: E402
from dfimat_client.protocol import new_token  # noqa: E402


def test_image(megapixels: float) -> tuple[np.ndarray, int, int]:
    """A real photo (the bench_engine one) at `megapixels`: a trained model then finds a person and runs its MRN, as
    for users. Without the shared data: a 4:3 gradient with noise (timings then skip most of the MRN work)."""
    path = default_photo()
    if path is not None:
        img = photo(path, megapixels)
        return img, img.shape[1], img.shape[0]
    h = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    w = int(round(megapixels * 1e6 / h))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) * 255 // max(1, w + h - 2)], -1)
    noise = rng.integers(0, 32, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), w, h


def prompts_for(w: int, h: int, round_: int) -> dict:
    # The box is bench_engine's, around the nearest pedestrian of that photo; later rounds click inside it.
    if round_ == 0:
        return {"box": [w * 0.3, h * 0.15, w * 0.6, h * 0.95]}
    return {"clicks": [[w * (0.4 + 0.02 * round_), h * 0.5, round_ % 2 == 1]]}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def start_server(weights: str | None, token_file: Path, threads: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "backend", "serve", "--endpoint", "tcp://127.0.0.1:*", "--token-file",
           str(token_file), "--session-budget-mb", "8192"]
    if weights:
        cmd += ["--weights", weights]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"backend did not start: {line!r}")
    return proc, line.split()[1]


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one_session_served(client: Client, data: bytes, w: int, h: int, rounds: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    sid = client.open_image(data, w, h, 3)
    client.predict(sid, prompts_for(w, h, 0))
    first = time.perf_counter() - t0
    cached = []
    for k in range(1, rounds):
        t0 = time.perf_counter()
        client.predict(sid, prompts_for(w, h, k))
        cached.append(time.perf_counter() - t0)
    client.close(sid)
    return first, cached


def one_session_local(engine, img: np.ndarray, w: int, h: int, rounds: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    sid = engine.open(img)
    engine.predict(sid, prompts_for(w, h, 0))
    first = time.perf_counter() - t0
    cached = []
    for k in range(1, rounds):
        t0 = time.perf_counter()
        engine.predict(sid, prompts_for(w, h, k))
        cached.append(time.perf_counter() - t0)
    engine.close(sid)
    return first, cached


def bench_sizes(client: Client, engine, sizes: list[float], repeats: int, rounds: int) -> dict:
    """Server and in-process sessions alternate, so a change in machine load hits both sides alike."""
    out = {}
    for mp in sizes:
        img, w, h = test_image(mp)
        data = img.tobytes()
        served: tuple[list[float], list[float]] = ([], [])
        local: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeats):
            for side, (first, cached) in ((served, one_session_served(client, data, w, h, rounds)),
                                          (local, one_session_local(engine, img, w, h, rounds))):
                side[0].append(first)
                side[1].extend(cached)
        out[mp] = (w, h, served, local)
    return out


def bench_batch(client: Client, items: int, mp: float) -> tuple[float, int]:
    img, w, h = test_image(mp)
    data = img.tobytes()
    batch = [{"pixels": data, "width": w, "height": h, "channels": 3,
              "prompts": {"box": [w * 0.1 * (i % 3), h * 0.1, w * 0.6 + w * 0.1 * (i % 3), h * 0.9]}}
             for i in range(items)]
    t0 = time.perf_counter()
    result = client.batch(batch)
    elapsed = time.perf_counter() - t0
    masks = sum(len(it["masks"]) for it in result.items)
    return masks / elapsed * 60.0, masks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.5,1,4,24", help="megapixels, comma-separated")
    ap.add_argument("--repeats", type=int, default=5, help="sessions per size")
    ap.add_argument("--rounds", type=int, default=4, help="predict rounds per session (first + cached)")
    ap.add_argument("--batch-items", type=int, default=8)
    ap.add_argument("--batch-mp", type=float, default=1.0)
    ap.add_argument("--weights", help="checkpoint (default: the engine's default weights)")
    ap.add_argument("--tiny", action="store_true", help="use a random tiny checkpoint (plumbing speed only)")
    ap.add_argument("--random", action="store_true",
                    help="use randomly initialised weights of the full DFIMat-S configuration: the same speed as "
                         "trained weights, for machines that have no trained checkpoint yet")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in both server and in-process runs")
    ap.add_argument("--quick", action="store_true", help="short run: --repeats 2 --rounds 3 --batch-items 4")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.rounds, args.batch_items = 2, 3, 4
    sizes = [float(s) for s in args.sizes.split(",")]

    import torch

    torch.set_num_threads(args.threads)
    from backend.runtime.engine import Engine

    tmp = Path(tempfile.mkdtemp(prefix="dfimat-bench-"))
    weights = args.weights
    if args.tiny:
        from backend.dfimat.model import build_tiny_checkpoint

        weights = str(build_tiny_checkpoint(tmp / "tiny.pt"))
    elif args.random:
        from backend.dfimat.model import DFIMatS, save_checkpoint

        torch.manual_seed(0)
        weights = str(save_checkpoint(DFIMatS(), tmp / "random-full.pt", meta={"random": True}))
    token = new_token()
    token_file = write_token(tmp / "token", token)
    load_before = os.getloadavg()
    engine = Engine.load(device="cpu", weights=weights)
    warm, ww, wh = test_image(0.1)
    sid = engine.open(warm)
    engine.predict(sid, {"box": [1, 1, 50, 50]})
    engine.close(sid)
    proc, endpoint = start_server(weights, token_file, args.threads)
    try:
        client = Client(endpoint, token, timeout=60)
        info = client.hello()
        client.predict(client.open_image(warm.tobytes(), ww, wh, 3), {"box": [1, 1, 50, 50]})  # warm-up
        results = bench_sizes(client, engine, sizes, args.repeats, args.rounds)
        rate, masks = bench_batch(client, args.batch_items, args.batch_mp)
        rss = peak_rss_mb(proc.pid)
        client.disconnect()
    finally:
        proc.terminate()
        proc.wait(30)

    load_after = os.getloadavg()
    # The machine may be shared: the load average says how much the numbers below can be trusted.
    print("load average (1, 5, 15 min): before " + ", ".join(f"{x:.2f}" for x in load_before)
          + "; after " + ", ".join(f"{x:.2f}" for x in load_after))
    print(f"model {info['model']} on {info['device']}, {args.threads} threads, weights "
          f"{'tiny random' if args.tiny else 'full-size random' if args.random else (weights or 'default')}; {args.repeats} sessions x {args.rounds} rounds")
    print(f"{'MP':>5} {'size':>11} | {'first med':>9} {'first p90':>9} {'cached med':>10} {'cached p90':>10} "
          f"| {'in-proc first':>13} {'in-proc cached':>14} | {'ratio first':>11} {'ratio cached':>12}")
    for mp in sizes:
        w, h, (first, cached), (lf, lc) = results[mp]
        rf = statistics.median(first) / statistics.median(lf)
        rc = statistics.median(cached) / statistics.median(lc) if cached and lc else float("nan")
        print(f"{mp:>5g} {f'{w}x{h}':>11} | {statistics.median(first) * 1e3:>7.0f}ms {pct(first, 90) * 1e3:>7.0f}ms "
              f"{(statistics.median(cached) if cached else float('nan')) * 1e3:>8.0f}ms "
              f"{pct(cached, 90) * 1e3:>8.0f}ms | {statistics.median(lf) * 1e3:>11.0f}ms "
              f"{(statistics.median(lc) if lc else float('nan')) * 1e3:>12.0f}ms | {rf:>11.2f} {rc:>12.2f}")
    print(f"batch: {masks} masks at {args.batch_mp:g} MP -> {rate:.1f} masks/min")
    print(f"server peak RSS: {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
