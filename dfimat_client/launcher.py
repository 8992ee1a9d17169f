"""Start the backend from the install config's ``backend_command`` and wait for its ``READY <endpoint>`` line.

The started backend dies with the process it watches: it polls that pid (``--parent-pid``, every platform) and,
on Linux when started from the main thread, also asks the kernel for SIGTERM when its parent exits
(PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so a worker thread must not ask for it).
GIMP runs each plug-in call as a short-lived process, so its plug-in passes ``watch_pid=os.getppid()`` (GIMP
itself) to keep one backend for the whole GIMP session.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import zmq

from dfimat_client import protocol as P
from dfimat_client.config import Config, runtime_dir
from dfimat_client.errors import BackendNotRunning

READY_PREFIX = "READY "
# The editor's Python settings must not leak into the backend's own virtual environment.
_STRIPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV")


@dataclass
class BackendProcess:
    """A started backend; ``process`` is None when another client had already started it."""

    process: subprocess.Popen | None
    endpoint: str

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def is_running(endpoint: str, token: str = "", timeout: float = 1.0, context: zmq.Context | None = None) -> bool:
    """True if something speaking the DFIMat protocol answers at ``endpoint`` (any reply counts)."""
    if endpoint.startswith("ipc://") and not Path(endpoint[len("ipc://"):]).exists():
        return False
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        _, frames = P.encode_request("hello", {}, token=token, stream=False)
        sock.send_multipart(frames)
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            return False
        try:
            P.decode_reply(sock.recv_multipart())
        except P.ProtocolError:
            return False
        return True
    finally:
        sock.close(linger=0)


def backend_args(config: Config, endpoint: str | None = None, watch_pid: int | None = None,
                 pdeathsig: bool = False) -> list[str]:
    if not config.backend_command:
        raise BackendNotRunning(f"the install config {config.path} has no backend_command")
    cmd = list(config.backend_command)
    cmd += ["--endpoint", endpoint or config.endpoint, "--device", config.device or "cpu"]
    if config.token_file is not None:
        cmd += ["--token-file", str(config.token_file)]
    if watch_pid is not None:
        cmd += ["--parent-pid", str(watch_pid)]
    if pdeathsig:
        cmd.append("--pdeathsig")
    return cmd


def start_backend(config: Config, *, endpoint: str | None = None, timeout: float = 120.0,
                  watch_pid: int | None = None, cwd: str | Path | None = None, env: dict[str, str] | None = None,
                  log_file: str | Path | None = None) -> BackendProcess:
    """Launch the backend and return once it printed ``READY <endpoint>``.

    Raises BackendNotRunning with the backend's last output if it exits or stays silent for ``timeout`` s.
    Another client starting the same backend at the same moment is serialised by a lock file; whoever comes
    second finds it running and gets a BackendProcess whose ``process`` is None.
    """
    endpoint = endpoint or config.endpoint
    watch = os.getpid() if watch_pid is None else watch_pid
    pdeathsig = (sys.platform.startswith("linux") and watch == os.getpid()
                 and threading.current_thread() is threading.main_thread())
    cmd = backend_args(config, endpoint, watch, pdeathsig)
    if env is None:
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
    with _launch_lock():
        if is_running(endpoint, timeout=0.5):
            return BackendProcess(None, endpoint)
        stderr = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                    cwd=cwd, env=env, start_new_session=True, text=True, bufsize=1)
        except OSError as exc:
            raise BackendNotRunning(f"cannot start the backend {cmd[0]}: {exc}") from None
        finally:
            if stderr is not None:
                stderr.close()
        ready = _wait_ready(proc, timeout)
    return BackendProcess(proc, ready)


def _wait_ready(proc: subprocess.Popen, timeout: float) -> str:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        # Keeps draining stdout for the backend's whole life so it can never block on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, name="dfimat-backend-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            raise BackendNotRunning(f"the backend did not report READY within {timeout:g} s; output: {seen[-5:]}")
        try:
            line = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if line is None:
            code = proc.wait()
            raise BackendNotRunning(f"the backend exited with code {code} before it was ready; output: {seen[-5:]}")
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX):].strip()
        seen.append(line)


@contextmanager
def _launch_lock() -> Iterator[None]:
    path = runtime_dir() / "launch.lock"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a+b") as fh:
        if os.name == "nt":
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
