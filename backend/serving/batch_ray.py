"""The batch job on Ray: ``python -m backend batch DIR -o OUT --ray [ADDRESS]``.

One actor per worker slot (one CPU, or ``gpus_per_worker`` GPUs) holds one loaded engine, an
`backend.serving.batch.ImageWorker`, and mattes one image at a time; the driver (this process) hands each actor
its next image as soon as the previous one is back, records the entries and owns the index, the progress bar and
the summary (`backend.serving.batch.Job`, the same as the local batch). Actors read DIR and write OUT themselves,
so both must be on storage every node sees.

Failures are Ray's to handle: an actor whose process dies is restarted (``max_restarts=-1``: in a new process, on
any node with a free slot) and the image it was working on is sent to it again (``max_task_retries``). An image
that kills its worker ``MAX_TASK_RETRIES + 1`` times is reported in the index as failed and the job goes on.
A retried image writes the same masks again through temporary files and renames, and only the driver writes the
index, once per returned result: each image ends up in the outputs exactly once.

Ray is an optional dependency: this module imports it only when ``--ray`` is used.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from dataclasses import replace
from typing import Any

from backend.serving.batch import BatchError, BatchOptions, Detector, Job, interrupt_on_sigterm, plan_job

INSTALL_HINT = 'pip install "dfimat[ray]" (or pip install "ray[default]>=2.40,<3")'
# Retries of one image after its worker process died; more deaths on the same image mean the image itself kills
# the worker (out of memory on a huge photo, a crash in a native decoder) and it is reported instead.
MAX_TASK_RETRIES = 2
CPUS_PER_WORKER = 1
WAIT_S = 0.5  # ray.wait's timeout: how soon Ctrl-C is noticed while every worker is busy
# Tries of a ray:// connection that the head's client server refused at its start. That server starts one process
# per connection, and with Ray 2.60 a start sometimes fails on its own (the new process dies before it runs, its
# ray_client_server_230NN.err empty or holding gRPC's "epoll_wait error: Bad file descriptor"; the driver gets
# "Initialization failure from server" after about 40 s): seen in a fresh-clone test run and in 1 of 4 connections
# in a loop. The next connection gets a new process. An unreachable address is not retried here: Ray's client
# already waits and retries for it.
CLIENT_ATTEMPTS = 3


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BatchError(f"--ray needs Ray, which {sys.executable} does not have: {INSTALL_HINT} "
                         "(docs/batch.md)") from None
    return ray


class _Actor:
    """Ray actor body: one `ImageWorker` per process. Loading errors are kept and reported by ``ready`` rather
    than raised, so the driver can name the node and Ray does not restart an actor that can never load."""

    def __init__(self, options: BatchOptions, detector: Detector | None) -> None:
        from backend.serving.batch import BatchError, ImageWorker

        self.worker: Any = None
        self.error: str | None = None
        if not options.directory.is_dir() or not options.output.is_dir():
            self.error = (f"{options.directory} or {options.output} is not a folder on this node: DIR and OUT must "
                          "be on storage every node sees (docs/batch.md)")
            return
        try:
            self.worker = ImageWorker(options, detector)
        except BatchError as exc:
            self.error = str(exc)

    def ready(self) -> dict[str, Any]:
        import ray

        return {"job": getattr(self.worker, "job", None), "error": self.error, "pid": os.getpid(),
                "node": ray.util.get_node_ip_address()}

    def process(self, name: str) -> dict[str, Any]:
        return self.worker.process(name)


def connect(ray: Any, address: str | None) -> bool:
    """Connect to ``address`` (None: a new local Ray with this machine's cores); returns whether this call
    connected (and should disconnect at the end)."""
    if ray.is_initialized():
        return False
    # Workers' output (mediapipe's native log lines) would break the progress bar; it stays in Ray's session logs.
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    attempts = CLIENT_ATTEMPTS if address is not None and address.startswith("ray://") else 1
    attempt = 1
    while True:
        try:
            if address is None:
                ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
            else:
                ray.init(address=address, **kwargs)
            return True
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            # ConnectionAbortedError: the client server refused this connection (ray:// only).
            if not isinstance(exc, ConnectionAbortedError) or attempt == attempts:
                tried = f" (tried {attempts} times)" if attempts > 1 and attempt == attempts else ""
                raise BatchError(f"cannot reach the Ray cluster at {address}: {first}{tried}") from None
            print(f"ray: {address} refused the connection ({first.rstrip(':')}); connecting again",
                  file=sys.stderr)
            attempt += 1


def worker_count(ray: Any, workers: int | None, gpus_per_worker: float, images: int) -> int:
    """``workers``, else one per free slot of the cluster (CPUs, or GPUs / ``gpus_per_worker``); never more than
    there are images."""
    resources = ray.cluster_resources()
    if gpus_per_worker > 0:
        gpus = resources.get("GPU", 0.0)
        if gpus < gpus_per_worker:
            raise BatchError(f"--gpus-per-worker {gpus_per_worker:g} needs GPUs, and the Ray cluster has "
                             f"{gpus:g}")
        slots = int(gpus // gpus_per_worker)
    else:
        slots = int(resources.get("CPU", 0.0) // CPUS_PER_WORKER)
    return max(1, min(workers or slots or 1, images))


def run_ray(options: BatchOptions, address: str | None = None, workers: int | None = None,
            gpus_per_worker: float = 0.0, detector: Detector | None = None) -> int:
    """The batch on Ray; returns the exit code like `backend.serving.batch.run_local`."""
    try:
        if gpus_per_worker < 0 or (workers is not None and workers < 1):
            raise BatchError("--workers must be at least 1 and --gpus-per-worker at least 0")
        if options.device == "cuda" and gpus_per_worker == 0:
            raise BatchError("--device cuda with --ray needs --gpus-per-worker: Ray gives an actor a GPU only "
                             "when it asks for one")
        ray = import_ray()
        plan = plan_job(options)
        # Workers start elsewhere (another folder, another machine): they need absolute paths, and OUT must
        # exist before they check that they can see it.
        options = replace(options, directory=options.directory.absolute(), output=options.output.absolute(),
                          device=options.device or ("cuda" if gpus_per_worker > 0 else None))
        options.output.mkdir(parents=True, exist_ok=True)
        owns = connect(ray, address)
    except (BatchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # ray.init installed a SIGTERM handler that exits at once; ours records what is finished first.
        with interrupt_on_sigterm():
            return _run(ray, options, plan, workers, gpus_per_worker, detector)
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if owns:
            ray.shutdown()


def _run(ray: Any, options: BatchOptions, plan: Any, workers: int | None, gpus_per_worker: float,
         detector: Detector | None) -> int:
    from ray.exceptions import RayActorError, RayError, RayTaskError

    n = worker_count(ray, workers, gpus_per_worker, len(plan.names))
    actor_class = ray.remote(_Actor).options(num_cpus=CPUS_PER_WORKER, num_gpus=gpus_per_worker,
                                             max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)
    started = time.monotonic()
    actors = [actor_class.remote(options, detector) for _ in range(n)]
    print(f"ray: {n} workers ({CPUS_PER_WORKER} CPU, {gpus_per_worker:g} GPU each) on a cluster with "
          f"{ray.cluster_resources().get('CPU', 0):g} CPUs and {ray.cluster_resources().get('GPU', 0):g} GPUs",
          file=sys.stderr)
    starting = {a.ready.remote(): a for a in actors}  # an actor works once its model is loaded
    busy: dict[Any, tuple[str, Any]] = {}
    idle: list[Any] = []
    todo: deque[str] = deque()
    job: Job | None = None
    key: str | None = None
    try:
        while True:
            while job is not None and idle and todo:
                actor, name = idle.pop(), todo.popleft()
                busy[actor.process.remote(name)] = (name, actor)
            if job is not None and not todo and not busy:
                break
            if not starting and not busy:
                raise BatchError("no Ray worker is left for the remaining images")
            done, _ = ray.wait([*starting, *busy], num_returns=1, timeout=WAIT_S)
            for ref in done:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        info = ray.get(ref)
                    except RayError as exc:
                        info = {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0], "node": "?"}
                    problem = info["error"] or (None if key in (None, info["job"]) else
                                                "it loaded other weights or engine settings than the first worker")
                    if problem:
                        print(f"ray: a worker on {info['node']} is not used: {problem}", file=sys.stderr)
                        ray.kill(actor, no_restart=True)
                        if not starting and not idle and not busy:
                            raise BatchError(f"no Ray worker could start: {problem}")
                        continue
                    if job is None:
                        key = info["job"]
                        print(f"ray: first worker ready after {time.monotonic() - started:.1f} s", file=sys.stderr)
                        job = Job(options, plan)
                        todo.extend(job.start(key))
                    idle.append(actor)
                else:
                    name, actor = busy.pop(ref)
                    try:
                        entry = ray.get(ref)
                    except RayActorError as exc:
                        entry = {"image": name, "masks": [],
                                 "error": f"its worker process died {MAX_TASK_RETRIES + 1} times on it "
                                          f"({type(exc).__name__}; out of memory?)"}
                    except RayTaskError as exc:
                        entry = {"image": name, "masks": [], "error": f"{type(exc.cause).__name__}: {exc.cause}"}
                    assert job is not None
                    job.record(entry)
                    idle.append(actor)
    except BatchError:
        _stop(ray, actors)
        if job is not None:
            job.save()  # what is finished stays finished for the rerun
        raise
    except KeyboardInterrupt:
        _stop(ray, actors)
        if job is None:
            print("interrupted before any worker was ready; nothing was written", file=sys.stderr)
            return 130
        return job.finish(interrupted=True)
    _stop(ray, actors)
    assert job is not None
    return job.finish()


def _stop(ray: Any, actors: list[Any]) -> None:
    """End the actors now, so none is still writing once the driver has written the index."""
    for a in actors:
        ray.kill(a, no_restart=True)
