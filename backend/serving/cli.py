"""Subcommands of ``python -m backend``: ``serve`` (the ZeroMQ service), ``matte`` and ``batch`` (headless)."""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

from dfimat_client import protocol as P
from dfimat_client.config import (
    ConfigError,
    default_endpoint,
    load_config,
    read_token,
    runtime_dir,
    write_token,
)

DEVICES = ("cpu", "cuda")
LOCAL_RAY = "local"  # --ray without an address


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the backend service (prints 'READY <endpoint>' when it answers)")
    serve.add_argument("--endpoint", help="tcp://127.0.0.1:PORT or ipc:///path (default: install config, "
                                          f"else {default_endpoint()})")
    serve.add_argument("--device", default=None, choices=DEVICES, help="default: install config, else cpu")
    serve.add_argument("--token-file", help="file holding the shared secret (created, mode 0600, if missing)")
    serve.add_argument("--weights", help="model checkpoint (default: the engine's default weights)")
    serve.add_argument("--allow-remote", action="store_true",
                       help="allow a non-loopback tcp endpoint (anyone who can reach it and has the token can use it)")
    serve.add_argument("--max-pixels", type=int, default=P.MAX_PIXELS, help="largest accepted image, in pixels")
    serve.add_argument("--session-budget-mb", type=int, default=2048,
                       help="memory budget for cached image sessions; least recently used ones are evicted")
    serve.add_argument("--max-sessions", type=int, default=32)
    serve.add_argument("--parent-pid", type=int, help="stop when this process exits")
    serve.add_argument("--pdeathsig", action="store_true", help="Linux: also ask the kernel for SIGTERM when "
                                                                "the parent exits")
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(func=cmd_serve)

    matte = sub.add_parser("matte", help="matte one image from prompts and write the alpha as a PNG")
    matte.add_argument("image", type=Path)
    matte.add_argument("--box", type=parse_box, help="x0,y0,x1,y1")
    matte.add_argument("--click", type=parse_click, action="append", default=[], help="x,y[,+|-] (repeatable)")
    matte.add_argument("--scribble", type=parse_scribble, action="append", default=[],
                       help='"x,y;x,y;...[:+|-]" (repeatable)')
    matte.add_argument("--scribble-width", type=float, default=5.0, help="scribble width in pixels")
    matte.add_argument("--text", help="describe the person, e.g. 'the woman in the red coat'")
    matte.add_argument("-o", "--output", type=Path, required=True)
    _engine_args(matte)
    matte.set_defaults(func=cmd_matte)

    batch = sub.add_parser("batch", help="write one alpha PNG per person per image of a folder")
    batch.add_argument("directory", type=Path)
    batch.add_argument("--text", default="person",
                       help="prompt text used with each person's box (\"\" for the boxes alone)")
    batch.add_argument("-o", "--output", type=Path, required=True)
    _engine_args(batch)
    batch.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                       help="run on Ray (optional extra: pip install \"dfimat[ray]\"): alone, a local Ray with "
                            "this machine's cores; 'auto', HOST:PORT or ray://HOST:PORT for a running cluster "
                            "(DIR and OUT must be on storage every node sees; docs/batch.md)")
    batch.add_argument("--workers", type=int, help="with --ray: how many actors, each holding one loaded model "
                                                   "(default: one per CPU of the cluster, or per GPU share)")
    batch.add_argument("--gpus-per-worker", type=float, default=0.0,
                       help="with --ray: GPUs each actor reserves (e.g. 1, or 0.5 for two per GPU); "
                            "implies --device cuda")
    batch.set_defaults(func=cmd_batch)


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="model checkpoint (default: the engine's default weights)")
    p.add_argument("--device", default=None, choices=DEVICES, help="default: cuda when available, else cpu")


# ---------------------------------------------------------------------------- argument parsing


def _numbers(text: str, n: int | None, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if n is not None and len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} needs {n} numbers, got {text!r}")
    if not all(v == v and abs(v) != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be finite numbers, got {text!r}")
    return values


def _sign(text: str, what: str) -> bool:
    if text in ("+", "pos", "positive", "1"):
        return True
    if text in ("-", "neg", "negative", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{what} sign must be + or -, got {text!r}")


def parse_box(text: str) -> list[float]:
    return _numbers(text, 4, "--box")


def parse_click(text: str) -> list[Any]:
    parts = text.split(",")
    if len(parts) == 3:
        return [*_numbers(",".join(parts[:2]), 2, "--click"), _sign(parts[2].strip(), "--click")]
    return [*_numbers(text, 2, "--click"), True]


def parse_scribble(text: str) -> dict[str, Any]:
    body, _, sign = text.partition(":")
    points = [_numbers(p, 2, "--scribble point") for p in body.split(";") if p.strip()]
    if not points:
        raise argparse.ArgumentTypeError(f"--scribble needs at least one x,y point, got {text!r}")
    return {"points": points, "positive": _sign(sign.strip(), "--scribble") if sign else True}


# ---------------------------------------------------------------------------- commands


def load_engine(weights: str | None, device: str | None) -> Any:
    from backend.runtime.engine import Engine

    return Engine.load(device=device, weights=weights or installed_weights())


def load_engine_or_explain(weights: str | None, device: str | None) -> Any | None:
    """The engine, or None after one ``error:`` line on stderr when the weights or the device are unusable."""
    try:
        return load_engine(weights, device)
    except (ValueError, OSError, pickle.UnpicklingError) as exc:
        # torch's unpickling errors run to a page of advice; the first line names the problem.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: cannot load the model: {first}", file=sys.stderr)
        return None


def installed_weights() -> str | None:
    """The install config's model, when no explicit choice was made.

    An installed (non-editable) backend cannot find the repository's models/ folder, and the plugins start
    it without environment variables, so the config's models_dir is the only pointer it has.
    """
    if os.environ.get("DFIMAT_WEIGHTS") or os.environ.get("DFIMAT_MODELS_DIR"):
        return None
    from dfimat_client.config import ConfigError, load_config

    try:
        models_dir = load_config().models_dir
    except (ConfigError, OSError):
        return None
    if not models_dir:
        return None
    candidate = Path(models_dir) / "dfimat-s" / "dfimat-s.pt"
    return str(candidate) if candidate.is_file() else None


def resolve_token(token_file: str | None) -> tuple[str, Path]:
    """The token from --token-file, else the install config's, else a private one in the runtime folder."""
    path: Path | None = Path(token_file) if token_file else None
    if path is None:
        try:
            path = load_config().token_file
        except ConfigError:
            path = None
    if path is None:
        path = runtime_dir() / "token"
    if not path.exists():
        write_token(path, P.new_token())
    return read_token(path), path


def cmd_serve(args: argparse.Namespace) -> int:
    # Imports and the model take seconds; a SIGINT/SIGTERM meanwhile must still end the process cleanly (exit
    # 0, no KeyboardInterrupt traceback), so the handlers come first and only remember the request until a
    # server exists to stop.
    stop = StopRequest()
    stop.install()
    from backend.serving.server import EndpointError, Server, check_endpoint

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.pdeathsig:
        _ask_for_pdeathsig(args.parent_pid)
    try:
        config = load_config()
    except ConfigError:
        config = None
    endpoint = args.endpoint or (config.endpoint if config else default_endpoint())
    device = args.device or (config.device if config else "cpu")
    try:
        check_endpoint(endpoint, args.allow_remote)
        token, token_path = resolve_token(args.token_file)
    except (EndpointError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if stop.requested:
        return 0
    # stdout carries exactly one line, READY; libraries that print while loading go to stderr instead.
    ready_out, sys.stdout = sys.stdout, sys.stderr
    log = logging.getLogger("dfimat.server")
    log.info("loading the model (%s) on %s", args.weights or "default weights", device)
    engine = load_engine_or_explain(args.weights, device)
    if engine is None:
        return 2
    if stop.requested:
        return 0
    server = Server(engine, endpoint=endpoint, token=token, allow_remote=args.allow_remote,
                    max_pixels=args.max_pixels, session_budget=args.session_budget_mb * 1024**2,
                    max_sessions=args.max_sessions, device=device, parent_pid=args.parent_pid)
    try:
        server.bind()
    except EndpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop.target = server.stop
    if stop.requested:
        server.stop()
    log.info("token file %s", token_path)
    server.serve_forever(on_ready=lambda ep: print(f"READY {ep}", file=ready_out, flush=True))
    return 0


class StopRequest:
    """SIGINT/SIGTERM handler: calls ``target`` once one is set, and remembers a signal that came earlier."""

    def __init__(self) -> None:
        self.requested = False
        self.target: Any = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, *_: Any) -> None:
        self.requested = True
        if self.target is not None:
            self.target()


def _ask_for_pdeathsig(parent_pid: int | None) -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl took effect; then we were re-parented already.
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.exit(0)


def read_rgb(path: Path) -> Any:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_alpha(path: Path, alpha: Any) -> None:
    import cv2

    from backend.serving.server import alpha_to_uint8

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), alpha_to_uint8(alpha)):
        raise OSError(f"cannot write {path}")


def cmd_matte(args: argparse.Namespace) -> int:
    from backend.dfimat.prompts import PromptError

    prompts: dict[str, Any] = {"box": args.box, "clicks": args.click, "text": args.text,
                               "scribbles": [dict(s, width=args.scribble_width) for s in args.scribble]}
    if not (args.box or args.click or args.scribble or args.text):
        print("error: give at least one prompt: --box, --click, --scribble or --text", file=sys.stderr)
        return 2
    try:
        image = read_rgb(args.image)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = load_engine_or_explain(args.weights, args.device)
    if engine is None:
        return 2
    sid = engine.open(image)
    try:
        alpha = engine.predict(sid, prompts)
    except PromptError as exc:
        print(f"error: bad prompt: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.close(sid)
    write_alpha(args.output, alpha)
    print(f"wrote {args.output} ({image.shape[1]}x{image.shape[0]})")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """The batch job (`backend.serving.batch`); with --ray on a Ray cluster (`backend.serving.batch_ray`)."""
    from backend.serving.batch import BatchOptions, run_local

    options = BatchOptions(directory=args.directory, output=args.output, text=args.text, weights=args.weights,
                           device=args.device)
    if args.ray is None:
        if args.workers is not None or args.gpus_per_worker:
            print("error: --workers and --gpus-per-worker need --ray", file=sys.stderr)
            return 2
        return run_local(options)
    from backend.serving.batch_ray import run_ray

    return run_ray(options, address=None if args.ray == LOCAL_RAY else args.ray, workers=args.workers,
                   gpus_per_worker=args.gpus_per_worker)
