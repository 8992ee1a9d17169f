"""The launcher's failure modes, with small stand-in commands (the real backend is in test_cli.py)."""

from __future__ import annotations

import sys
import time

import pytest

from dfimat_client import BackendNotRunning
from dfimat_client.config import Config
from dfimat_client.launcher import backend_args, is_running, start_backend


def config(code: str, tmp_path) -> Config:
    return Config(endpoint=f"ipc://{tmp_path / 'x.sock'}", token_file=tmp_path / "token",
                  backend_command=[sys.executable, "-c", code], path=tmp_path / "config.json")


def test_command_line_carries_endpoint_token_and_parent(tmp_path):
    args = backend_args(config("pass", tmp_path), watch_pid=123, pdeathsig=True)
    assert args[:2] == [sys.executable, "-c"]
    assert args[args.index("--endpoint") + 1] == f"ipc://{tmp_path / 'x.sock'}"
    assert args[args.index("--token-file") + 1] == str(tmp_path / "token")
    assert args[args.index("--parent-pid") + 1] == "123" and args[-1] == "--pdeathsig"
    with pytest.raises(BackendNotRunning, match="backend_command"):
        backend_args(Config(endpoint="tcp://127.0.0.1:1"))


def test_ready_line_gives_the_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    proc = start_backend(config("import sys, time; print('loading'); print('READY tcp://127.0.0.1:7'); "
                                "sys.stdout.flush(); time.sleep(30)", tmp_path), timeout=20)
    try:
        assert proc.endpoint == "tcp://127.0.0.1:7"
        assert proc.process.poll() is None
    finally:
        assert proc.stop(timeout=5) is not None
    assert proc.process.poll() is not None


def test_backend_that_exits_early_is_reported_with_its_output(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(BackendNotRunning, match="exited with code 3.*no weights here"):
        start_backend(config("import sys; print('no weights here'); sys.exit(3)", tmp_path), timeout=20)


def test_backend_that_never_gets_ready_times_out(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(BackendNotRunning, match="did not report READY"):
        start_backend(config("import time; print('thinking', flush=True); time.sleep(30)", tmp_path), timeout=1.0)
    assert time.monotonic() - start < 5


def test_missing_program_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    cfg = Config(endpoint="tcp://127.0.0.1:1", backend_command=[str(tmp_path / "no-such-python")])
    with pytest.raises(BackendNotRunning, match="cannot start"):
        start_backend(cfg, timeout=5)


def test_is_running_is_false_for_a_missing_ipc_socket(tmp_path):
    assert is_running(f"ipc://{tmp_path / 'none.sock'}", timeout=0.2) is False
