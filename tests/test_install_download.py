"""Model download path: a loopback HTTP server with Range support stands in for the model host."""

from __future__ import annotations

import hashlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_install_support import REPO, fast_args, isolated_env, make_models, run_install

sys.path.insert(0, str(REPO))

from installer.download import DownloadError, download  # noqa: E402

BLOB = bytes((i * 7919) % 251 for i in range(300_000))
SHA = hashlib.sha256(BLOB).hexdigest()


class _Server:
    """Serves BLOB at /model.pt; ``cut_first`` requests are dropped after ``cut_at`` bytes; ``ranges`` logs Range."""

    def __init__(self, honour_range: bool = True, cut_first: int = 0, cut_at: int = 100_000, status: int = 200):
        self.ranges: list[str | None] = []
        self.sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.ranges.append(self.headers.get("Range"))
                if status != 200:
                    self.send_error(status)
                    return
                start = 0
                rng = self.headers.get("Range")
                if honour_range and rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(BLOB):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(BLOB)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
                else:
                    self.send_response(200)
                body = BLOB[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if len(server.ranges) <= cut_first:
                    body = body[:cut_at]  # then the connection closes: an interrupted transfer
                self.wfile.write(body)
                server.sent += len(body)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.pt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_interrupted_download_resumes_with_range(tmp_path):
    dest = tmp_path / "m" / "model.pt"
    with _Server(cut_first=2, cut_at=100_000) as srv:
        download(srv.url, dest, SHA, len(BLOB), retries=4, backoff=0.01, log=lambda _m: None)
    assert dest.read_bytes() == BLOB
    assert not dest.with_name("model.pt.part").exists()
    offsets = _offsets(srv.ranges)
    # Each retry asks for the rest from what is on disk (requests may drop the last partial chunk of a broken
    # transfer, so the offsets are at most, not exactly, the bytes sent before each cut).
    assert srv.ranges[0] is None and len(offsets) == 2
    assert 0 < offsets[0] <= 100_000 and offsets[0] < offsets[1] <= offsets[0] + 100_000
    assert srv.sent < 2 * len(BLOB)  # resumed, not restarted


def _offsets(ranges: list[str | None]) -> list[int]:
    return [int(r[len("bytes="):].split("-")[0]) for r in ranges if r]


def test_part_file_from_an_earlier_run_is_resumed(tmp_path):
    dest = tmp_path / "model.pt"
    dest.with_name("model.pt.part").write_bytes(BLOB[:123_456])
    with _Server() as srv:
        download(srv.url, dest, SHA, len(BLOB), backoff=0.01)
    assert dest.read_bytes() == BLOB
    assert srv.ranges == ["bytes=123456-"]


def test_server_without_range_support_restarts_cleanly(tmp_path):
    dest = tmp_path / "model.pt"
    dest.with_name("model.pt.part").write_bytes(b"stale bytes from some other file")
    with _Server(honour_range=False) as srv:
        download(srv.url, dest, SHA, len(BLOB), backoff=0.01)
    assert dest.read_bytes() == BLOB


def test_wrong_hash_is_refused_and_the_part_file_deleted(tmp_path):
    dest = tmp_path / "model.pt"
    with _Server() as srv, pytest.raises(DownloadError, match="refused"):
        download(srv.url, dest, "0" * 64, len(BLOB), backoff=0.01)
    assert not dest.exists()
    assert not dest.with_name("model.pt.part").exists()


def test_gives_up_after_retries_and_keeps_the_part_for_next_time(tmp_path):
    dest = tmp_path / "model.pt"
    with _Server(cut_first=99, cut_at=70_000) as srv, pytest.raises(DownloadError, match="gave up after 3 attempts"):
        download(srv.url, dest, SHA, len(BLOB), retries=2, backoff=0.01, log=lambda _m: None)
    kept = dest.with_name("model.pt.part").stat().st_size
    assert 0 < kept < len(BLOB)
    assert len(srv.ranges) == 3 and _offsets(srv.ranges) == sorted(set(_offsets(srv.ranges)))
    assert not dest.exists()


def test_http_404_is_not_retried(tmp_path):
    with _Server(status=404) as srv, pytest.raises(DownloadError, match="404"):
        download(srv.url, tmp_path / "model.pt", SHA, len(BLOB), backoff=0.01)
    assert len(srv.ranges) == 1


def test_install_downloads_a_url_model_and_uninstall_removes_it(tmp_path):
    env = isolated_env(tmp_path)
    with _Server(cut_first=1, cut_at=150_000) as srv:
        weights = make_models(tmp_path / "models", BLOB, url=srv.url)
        out = run_install(fast_args(tmp_path), env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert weights.read_bytes() == BLOB
    assert srv.ranges[0] is None and len(_offsets(srv.ranges)) == 1  # one interruption, one resume
    assert run_install(["--uninstall", "--yes"], env).returncode == 0
    assert not weights.exists()
    assert (tmp_path / "models" / "manifest.json").exists()


def test_install_refuses_a_url_model_with_the_wrong_hash(tmp_path):
    env = isolated_env(tmp_path)
    with _Server() as srv:
        weights = make_models(tmp_path / "models", BLOB, url=srv.url, sha256="1" * 64)
        out = run_install(fast_args(tmp_path), env)
    assert out.returncode == 1
    assert "refused" in out.stderr and "download failed" in out.stderr
    assert not weights.exists() and not Path(str(weights) + ".part").exists()
