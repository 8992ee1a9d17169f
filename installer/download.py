"""Resumable, verified download of one model file.

Runs inside the backend venv (``python -m installer.download``) because that is where ``requests`` lives; the
installer itself stays stdlib-only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


class DownloadError(RuntimeError):
    """The file could not be fetched (after retries) or failed its checks; nothing is left at the target."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: str,
    size: int | None = None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch ``url`` to ``dest`` via ``dest.part``, resuming with HTTP Range, and accept it only if sha256 matches.

    A broken connection keeps the part file and retries (``backoff`` doubles each time); a wrong hash or size deletes
    the part file and raises DownloadError, so a rerun starts clean.
    """
    try:
        import requests
    except ImportError as exc:
        raise DownloadError(f"requests is not installed in {sys.executable}") from exc

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            log(f"  retry {attempt}/{retries} in {delay:.1f} s ({last_error})")
            time.sleep(delay)
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=timeout) as resp:
                if resp.status_code == 416 and have:
                    pass  # the part file already holds everything the server has: go verify it
                elif resp.status_code == 206 and have:
                    if not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                        part.unlink()  # the server answered a different range: appending would corrupt
                        last_error = DownloadError(f"unexpected Content-Range {resp.headers.get('Content-Range')!r}")
                        continue
                    _append(resp, part, "ab")
                elif resp.status_code == 200:
                    _append(resp, part, "wb")  # server ignored Range: start over
                elif resp.status_code in (408, 429) or resp.status_code >= 500:
                    last_error = DownloadError(f"HTTP {resp.status_code}")
                    continue
                else:
                    raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason}")
        except requests.RequestException as exc:
            last_error = exc
            continue
        return _accept(part, dest, sha256, size, url)
    raise DownloadError(f"{url}: gave up after {retries + 1} attempts: {last_error}")


def _append(resp, part: Path, mode: str) -> None:
    with open(part, mode) as fh:
        for chunk in resp.iter_content(chunk_size=1 << 16):
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())


def _accept(part: Path, dest: Path, sha256: str, size: int | None, url: str) -> Path:
    got_size = part.stat().st_size
    digest = _sha256(part)
    if (size is not None and got_size != size) or digest != sha256:
        part.unlink()
        raise DownloadError(
            f"{url}: refused, got {got_size} bytes with sha256 {digest}, expected "
            f"{size if size is not None else '?'} bytes with sha256 {sha256}; the partial file was deleted"
        )
    os.replace(part, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m installer.download")
    ap.add_argument("url")
    ap.add_argument("dest", type=Path)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--size", type=int)
    ap.add_argument("--retries", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        download(args.url, args.dest, args.sha256, args.size, retries=args.retries)
    except DownloadError as exc:
        print(f"download failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
