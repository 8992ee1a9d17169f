"""A cached Debian 13 (trixie) root for running the real GIMP 3.0 and Krita 5.2 in tests.

Debian 12 ships GIMP 2.10 (no Python) and Krita 5.1, so tests that need GIMP 3.0.4 or Krita 5.2.9 run them
from a debootstrap'ed trixie root entered with bubblewrap. On a Debian 13 host with the packages installed the
host itself is used and no root is built.

API for tests:

- ``skip_reason() -> str | None``: why the real editors cannot run here (``None`` when they can).
- ``ensure_root() -> Path``: build the root once (cached, guarded by a file lock) and return it; ``Path("/")``
  on a Debian 13 host.
- ``run_in_root(cmd, binds=..., env=..., ...) -> CompletedProcess``: run ``cmd`` inside the root. Binds are
  host paths mounted at the *same* path inside the root (or ``(host, inside)`` pairs), so file names in
  arguments mean the same thing in both worlds. The network namespace is shared, so a backend listening on
  ``tcp://127.0.0.1:<port>`` on the host is reachable from inside.

The cache lives in ``$DFIMAT_TRIXIE_ROOT`` or ``<repo>/.cache/trixie-root``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "gimp", "python3-gi", "python3-numpy", "python3-zmq", "xvfb", "xauth", "krita", "python3-pyqt5",
    "ca-certificates",
    # The GIMP PDB has no undo call: the undo test presses Ctrl+Z in a real GIMP window under Xvfb.
    "xdotool",
)
# The stamp records what was installed: a changed package list rebuilds the apt step, not the bootstrap.
_STAMP = ".dfimat-ready"
_HOST_TOOLS = {"debootstrap": "debootstrap", "bwrap": "bubblewrap"}
_DEFAULT_MIRROR = "http://deb.debian.org/debian"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Bind = str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike]


def root_path() -> Path:
    return Path(os.environ.get("DFIMAT_TRIXIE_ROOT", REPO / ".cache" / "trixie-root"))


def _stamp_text() -> str:
    return " ".join(PACKAGES) + "\n"


def _host_is_trixie_with_editors() -> bool:
    try:
        release = Path("/etc/os-release").read_text()
    except OSError:
        return False
    return "VERSION_CODENAME=trixie" in release and all(
        shutil.which(tool) for tool in ("gimp-console-3.0", "krita", "xvfb-run")
    )


def _root_ready(root: Path) -> bool:
    stamp = root / _STAMP
    return stamp.is_file() and stamp.read_text() == _stamp_text()


def _missing_host_tools() -> list[str]:
    return [pkg for tool, pkg in _HOST_TOOLS.items() if shutil.which(tool) is None]


def _bwrap_works() -> str | None:
    """bwrap can be installed yet unusable (no user namespaces in a container); find out cheaply."""
    try:
        out = subprocess.run(
            ["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not start: {exc}"
    if out.returncode != 0:
        return f"bwrap cannot create a sandbox here: {out.stderr.strip() or out.returncode}"
    return None


def skip_reason() -> str | None:
    """Why the real editors cannot be run on this machine, or None if they can (possibly after a build)."""
    if not sys.platform.startswith("linux"):
        return f"real-editor tests need Linux (this is {sys.platform})"
    if _host_is_trixie_with_editors():
        return None
    root = root_path()
    missing = _missing_host_tools()
    if missing:
        if os.geteuid() != 0:
            return f"not root and {', '.join(missing)} missing: cannot build the Debian 13 root"
        if shutil.which("apt-get") is None:
            return f"{', '.join(missing)} missing and no apt-get to install them"
    elif _root_ready(root):
        return _bwrap_works()
    if os.geteuid() != 0:
        return f"not root: cannot debootstrap a Debian 13 root at {root} (needs root)"
    return None


def _install_host_tools() -> None:
    missing = _missing_host_tools()
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, capture_output=True)


def host_mirror() -> str:
    """The Debian mirror the host's apt already uses (a reachable one on restricted networks)."""
    candidates: list[str] = []
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                candidates.extend(line.split()[1:])
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split()
                if parts[:1] == ["deb"]:
                    uris = [p for p in parts[1:] if "://" in p]
                    candidates.extend(uris[:1])
    for uri in candidates:
        if "security" not in uri and "debian" in uri:
            return uri.rstrip("/")
    return _DEFAULT_MIRROR


@contextmanager
def _lock(root: Path):
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / (root.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log(msg: str) -> None:
    print(f"[debian13] {msg}", file=sys.stderr, flush=True)


def _bootstrap(root: Path) -> None:
    # A half-finished debootstrap leaves a root that looks complete; build in a side folder and rename.
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    mirror = host_mirror()
    _log(f"debootstrap trixie into {partial} from {mirror} (about a minute)")
    out = subprocess.run(
        ["debootstrap", "--variant=minbase", "trixie", str(partial), mirror],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"debootstrap failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    partial.rename(root)


def _install_packages(root: Path) -> None:
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    # Recommends would pull in a desktop's worth of packages; the editors run without them.
    script = (
        "set -e; apt-get update -q; "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        + " ".join(PACKAGES)
        + "; apt-get clean"
    )
    _log(f"installing {' '.join(PACKAGES)} in the root (a few minutes)")
    out = run_in_root(["sh", "-c", script], root=root, timeout=3600, admin=True)
    if out.returncode != 0:
        raise RuntimeError(f"apt-get in the root failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def ensure_root() -> Path:
    """Return the Debian 13 root with the editors installed, building it on first use."""
    reason = skip_reason()
    if reason:
        raise RuntimeError(f"cannot provide a Debian 13 root: {reason}")
    if _host_is_trixie_with_editors():
        return Path("/")
    root = root_path()
    if _root_ready(root) and not _missing_host_tools():
        return root
    with _lock(root):
        # Another process may have finished the build while we waited for the lock.
        if _root_ready(root) and not _missing_host_tools():
            return root
        _install_host_tools()
        if not (root / "usr" / "bin" / "apt-get").exists():
            if root.exists():
                shutil.rmtree(root)
            _bootstrap(root)
        _install_packages(root)
        (root / _STAMP).write_text(_stamp_text())
    reason = _bwrap_works()
    if reason:
        raise RuntimeError(reason)
    return root


def _bind_pairs(binds: Iterable[Bind]) -> list[tuple[str, str]]:
    pairs = []
    for bind in binds:
        if isinstance(bind, tuple):
            src, dst = bind
        else:
            src = dst = bind
        src_path = Path(src).resolve()
        if not src_path.exists():
            raise FileNotFoundError(f"bind source does not exist: {src_path}")
        pairs.append((str(src_path), str(Path(dst))))
    return pairs


def run_in_root(
    cmd: Sequence[str],
    binds: Iterable[Bind] = (),
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    timeout: float | None = 600,
    root: Path | None = None,
    input: str | None = None,
    admin: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` inside the Debian 13 root and return the completed process (text output captured).

    The environment is cleared to ``PATH``, ``LANG`` and ``HOME`` (``/tmp/home`` unless given) plus ``env``,
    so the host's venv or PYTHONPATH never leak into the editors' Python. ``/tmp`` is a fresh tmpfs each run;
    bind a host folder to keep anything. ``admin`` keeps root's capabilities (needed by apt/dpkg).
    """
    base_env = {"PATH": _PATH, "LANG": "C.UTF-8", "HOME": "/tmp/home"}
    base_env.update(env or {})
    pairs = _bind_pairs(binds)
    if root is None and _host_is_trixie_with_editors():
        return subprocess.run(
            list(cmd), env=base_env, cwd=cwd, timeout=timeout, capture_output=True, text=True, input=input,
        )
    root = root or root_path()
    if not (root / "usr" / "bin").is_dir():
        raise RuntimeError(f"no Debian 13 root at {root}; call ensure_root() first")
    args = [
        "bwrap", "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        # A private pid namespace: when a timeout kills bwrap, Xvfb and the editors die with it.
        "--unshare-pid", "--die-with-parent", "--clearenv",
    ]
    if admin:
        args += ["--cap-add", "ALL"]
    for src, dst in pairs:
        args += ["--bind", src, dst]
    for key, value in base_env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", str(cwd or "/")]
    if not admin:
        args += ["sh", "-c", 'mkdir -p "$HOME" && exec "$@"', "sh"]
    args += list(cmd)
    return subprocess.run(args, timeout=timeout, capture_output=True, text=True, input=input)


def xvfb_run(screen: str = "1280x1024x24") -> list[str]:
    """``xvfb-run`` for a command in the root. The root's /tmp is private, so ``-a`` there cannot see the host's X
    servers, yet X's abstract sockets are shared (same network namespace): starting at :99 collided with a host
    Xvfb still shutting down ("could not connect to display :99"). Start from a number no host server uses."""
    try:
        used = set(re.findall(r"@/tmp/\.X11-unix/X(\d+)", Path("/proc/net/unix").read_text()))
    except OSError:
        used = set()
    n = next(n for n in range(150, 1000) if str(n) not in used and not Path(f"/tmp/.X{n}-lock").exists())
    return ["xvfb-run", "-a", "-n", str(n), "-s", f"-screen 0 {screen}"]


if __name__ == "__main__":
    why = skip_reason()
    if why:
        print(f"unavailable: {why}")
        sys.exit(1)
    print(ensure_root())
