"""Cached Debian roots for running the real editors in tests, entered with bubblewrap.

Two roots, built the same way (debootstrap --variant=minbase, then apt-get inside the root):

- ``TRIXIE`` (Debian 13): GIMP 3.0.4 and Krita 5.2.9;
- ``BOOKWORM`` (Debian 12): Krita 5.1.5.

Nothing is installed on the host: every editor and library lives in its root. The two sandbox tools themselves
(debootstrap, bubblewrap) are the exception, and only under ``CI=true`` as root; anywhere else a missing tool is a
skip reason that names the one apt command to run. A host that is itself the root's release with the editors
installed is used directly and no root is built.

Where the roots live: ``$DFIMAT_TEST_ROOTS`` if set, else ``$XDG_CACHE_HOME/dfimat/test-roots`` (default
``~/.cache/dfimat/test-roots``), one folder per release (``trixie/``, ``bookworm/``). They are kept outside the
clone so that every clone and CI run on the machine builds them once; a per-root variable (``DFIMAT_TRIXIE_ROOT``,
``DFIMAT_BOOKWORM_ROOT``) points at one elsewhere. A stamp file in each root lists the packages installed in it:
a root that lacks some of a test's packages gets an apt step, never a new bootstrap.

API for tests (``tests/editors/debian13.py`` keeps the same functions for the Debian 13 root):

- ``ROOT.skip_reason() -> str | None``: why this root's editors cannot run here (``None`` when they can);
- ``ROOT.ensure_root() -> Path``: build once (file lock), return the root (``Path("/")`` on a matching host);
- ``ROOT.run_in_root(cmd, binds=..., env=..., ...) -> CompletedProcess``: run ``cmd`` inside the root. Binds
  are host paths mounted at the *same* path inside (or ``(host, inside)`` pairs), so file names in arguments mean
  the same in both worlds. The network namespace is shared: a backend on ``tcp://127.0.0.1:<port>`` is reachable.
- ``require(ROOT) -> Path``: ``ensure_root`` for a test, or skip with the reason (fail under ``CI=true``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST_TOOLS = {"debootstrap": "debootstrap", "bwrap": "bubblewrap"}
APT_COMMAND = "sudo apt-get install -y debootstrap bubblewrap"
_DEFAULT_MIRROR = "http://deb.debian.org/debian"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_STAMP = ".dfimat-ready"

Bind = str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike]


def in_ci() -> bool:
    """CI runs the test command with CI=true; there a real-editor test must run or fail, never skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def roots_dir() -> Path:
    explicit = os.environ.get("DFIMAT_TEST_ROOTS")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dfimat" / "test-roots"


def missing_host_tools() -> list[str]:
    """Debian package names of the sandbox tools that are not on PATH."""
    return [pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None]


def _log(msg: str) -> None:
    print(f"[sandbox] {msg}", file=sys.stderr, flush=True)


def install_host_tools() -> None:
    """apt-get the sandbox tools: allowed under CI=true as root only (the caller checks)."""
    # One lock for both roots: two builds must not run apt-get on the host at once (dpkg's own lock would fail one).
    with _lock(roots_dir() / "host-tools.lock"):
        missing = missing_host_tools()
        if not missing:
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _log(f"CI=true: apt-get install {' '.join(missing)} on the host (the only host packages the tests add)")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env,
                       capture_output=True)


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


def host_codename() -> str:
    try:
        release = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    fields = dict(line.split("=", 1) for line in release.splitlines() if "=" in line)
    return fields.get("VERSION_CODENAME", "").strip('"')


def bwrap_works() -> str | None:
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


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


@dataclass(frozen=True)
class DebianRoot:
    """One Debian release's root: which packages it holds and which host commands make it unnecessary."""

    release: str  # "13"
    codename: str  # "trixie"
    packages: tuple[str, ...]
    # On a host of this codename where all of these are on PATH, the host runs the tests and no root is built.
    host_commands: tuple[str, ...]
    what: str  # for messages: "GIMP 3 and Krita 5.2"

    @property
    def label(self) -> str:
        return f"Debian {self.release} ({self.codename})"

    @property
    def env_var(self) -> str:
        return f"DFIMAT_{self.codename.upper()}_ROOT"

    def root_path(self) -> Path:
        explicit = os.environ.get(self.env_var)
        return Path(explicit) if explicit else roots_dir() / self.codename

    def cache_key(self) -> str:
        """Short hash of the package list, printed with build logs so a rebuild's cause is visible."""
        return hashlib.sha256(" ".join(sorted(self.packages)).encode()).hexdigest()[:10]

    def host_has_editors(self) -> bool:
        return host_codename() == self.codename and all(shutil.which(c) for c in self.host_commands)

    def _stamped(self, root: Path) -> set[str]:
        try:
            return set((root / _STAMP).read_text().split())
        except OSError:
            return set()

    def ready(self, root: Path | None = None) -> bool:
        """Built, with every package of this list installed (a root may hold more: other tests' packages)."""
        return set(self.packages) <= self._stamped(root or self.root_path())

    def skip_reason(self) -> str | None:
        """Why this root's editors cannot run here, or None if they can (possibly after a build)."""
        if not sys.platform.startswith("linux"):
            return f"real-editor tests need Linux (this is {sys.platform})"
        if self.host_has_editors():
            return None
        missing = missing_host_tools()
        if missing:
            if not (in_ci() and os.geteuid() == 0 and shutil.which("apt-get")):
                return (f"{self.what} run from a {self.label} root built with debootstrap and entered with "
                        f"bubblewrap; {', '.join(missing)} missing: run `{APT_COMMAND}` and rerun the tests")
            return None  # CI=true as root: ensure_root installs them
        if self.ready():
            return bwrap_works()
        if os.geteuid() != 0:
            return f"not root: cannot debootstrap the {self.label} root at {self.root_path()} (needs root)"
        return None

    def ensure_root(self) -> Path:
        """Return the root with this list's packages installed, building it on first use."""
        reason = self.skip_reason()
        if reason:
            raise RuntimeError(f"cannot provide the {self.label} root: {reason}")
        if self.host_has_editors():
            return Path("/")
        root = self.root_path()
        if self.ready(root) and not missing_host_tools():
            return root
        with _lock(root.parent / (root.name + ".lock")):
            # Another process may have finished the build while we waited for the lock.
            if not (self.ready(root) and not missing_host_tools()):
                if missing_host_tools():
                    install_host_tools()
                if not (root / "usr" / "bin" / "apt-get").exists():
                    if root.exists():
                        shutil.rmtree(root)
                    self._bootstrap(root)
                self._install_packages(root)
        reason = bwrap_works()
        if reason:
            raise RuntimeError(reason)
        return root

    def _bootstrap(self, root: Path) -> None:
        # A half-finished debootstrap leaves a root that looks complete; build in a side folder and rename.
        partial = root.with_name(root.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        mirror = host_mirror()
        _log(f"debootstrap {self.codename} into {partial} from {mirror} (about a minute)")
        start = time.monotonic()
        out = subprocess.run(["debootstrap", "--variant=minbase", self.codename, str(partial), mirror],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        partial.rename(root)
        _log(f"debootstrap {self.codename}: {time.monotonic() - start:.0f} s")

    def _install_packages(self, root: Path) -> None:
        shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
        wanted = sorted(set(self.packages) | self._stamped(root))
        # Recommends would pull in a desktop's worth of packages; the editors run without them.
        # bwrap's tmpfs /tmp is 0755 root: apt's methods run as _apt and Debian 12's gpgv method writes a temporary
        # file there ("Couldn't create temporary file /tmp/apt.conf.* for passing config to apt-key").
        script = ("set -e; chmod 1777 /tmp; apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                  "--no-install-recommends " + " ".join(wanted) + "; apt-get clean; rm -rf /var/lib/apt/lists/*")
        _log(f"{self.label} root (packages {self.cache_key()}): apt-get install {' '.join(wanted)} (a few minutes)")
        start = time.monotonic()
        out = self.run_in_root(["sh", "-c", script], root=root, timeout=3600, admin=True)
        if out.returncode != 0:
            raise RuntimeError(f"apt-get in the {self.label} root failed ({out.returncode}):\n"
                               f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        (root / _STAMP).write_text(" ".join(wanted) + "\n")
        _log(f"{self.label} root ready in {time.monotonic() - start:.0f} s")

    def run_in_root(
        self,
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
        """Run ``cmd`` inside the root and return the completed process (text output captured).

        The environment is cleared to ``PATH``, ``LANG`` and ``HOME`` (``/tmp/home`` unless given) plus ``env``,
        so the host's venv or PYTHONPATH never leak into the editors' Python. ``/tmp`` is a fresh tmpfs each run;
        bind a host folder to keep anything. ``admin`` keeps root's capabilities (needed by apt/dpkg).
        """
        base_env = {"PATH": _PATH, "LANG": "C.UTF-8", "HOME": "/tmp/home"}
        base_env.update(env or {})
        pairs = _bind_pairs(binds)
        if root is None and self.host_has_editors():
            return subprocess.run(
                list(cmd), env=base_env, cwd=cwd, timeout=timeout, capture_output=True, text=True, input=input,
            )
        root = root or self.root_path()
        if not (root / "usr" / "bin").is_dir():
            raise RuntimeError(f"no {self.label} root at {root}; call ensure_root() first")
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

    def python_wrapper(self, folder: Path, visible: Sequence[Path] = ()) -> Path:
        """An executable ``folder/<codename>-python3`` that runs the root's python3 (the editors' plug-in
        interpreter) read-only with ``visible`` bound at the same paths, so install.py can use it as
        ``--gimp-python`` / ``--krita-python`` like any interpreter."""
        import shlex

        root = self.ensure_root()
        python = "/usr/bin/python3"
        if root != Path("/"):
            args = ["bwrap", "--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
            for path in (folder, *visible):
                args += ["--bind", str(path), str(path)]
            args += ["--unshare-pid", "--die-with-parent", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                     "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", "/tmp", "/usr/bin/python3"]
            python = " ".join(shlex.quote(a) for a in args)
        script = folder / f"{self.codename}-python3"
        script.write_text(f'#!/bin/sh\nexec {python} "$@"\n')
        script.chmod(0o755)
        return script


TRIXIE = DebianRoot(
    release="13", codename="trixie", what="GIMP 3 and Krita 5.2",
    packages=(
        "gimp", "python3-gi", "python3-numpy", "python3-zmq", "xvfb", "xauth", "krita", "python3-pyqt5",
        "ca-certificates",
        # The GIMP PDB has no undo call: the undo test presses Ctrl+Z in a real GIMP window under Xvfb.
        "xdotool",
    ),
    host_commands=("gimp-console-3.0", "krita", "xvfb-run"),
)
# Krita 5.1.5 is Debian 12's; its kritarunner and GUI run under Xvfb like 5.2's. python3-sip: PyQt5's runtime on 12.
BOOKWORM = DebianRoot(
    release="12", codename="bookworm", what="Krita 5.1",
    packages=("krita", "python3-pyqt5", "python3-sip", "python3-numpy", "python3-zmq", "xvfb", "xauth",
              "ca-certificates",
              # The loop test (tests/test_krita_loop.py) presses Krita's shortcuts as X key events.
              "xdotool"),
    host_commands=("krita", "kritarunner", "xvfb-run", "xdotool"),
)
ROOTS = (TRIXIE, BOOKWORM)


def editor_output(path: Path, editor: str, run: subprocess.CompletedProcess) -> dict:
    """The JSON a script inside an editor wrote to ``path``; the test fails with the editor's own output when there
    is none (the script cannot fail the test itself: the editor exits the same either way)."""
    import pytest

    if not path.is_file():
        pytest.fail(f"{editor} wrote no {path.name} (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return json.loads(path.read_text())


def require(root: DebianRoot) -> Path:
    """For a test: the built root, or a skip with the reason; under CI=true a failure instead of a skip."""
    import pytest

    reason = root.skip_reason()
    if reason:
        if in_ci():
            pytest.fail(f"CI=true: the real-editor tests must run, but {reason}")
        pytest.skip(reason)
    return root.ensure_root()


def xvfb_run(screen: str = "1280x1024x24") -> list[str]:
    """``xvfb-run`` for a command in a root. The root's /tmp is private, so ``-a`` there cannot see the host's X
    servers, yet X's abstract sockets are shared (same network namespace): starting at :99 collided with a host
    Xvfb still shutting down ("could not connect to display :99"). Start from a number no host server uses."""
    try:
        used = set(re.findall(r"@/tmp/\.X11-unix/X(\d+)", Path("/proc/net/unix").read_text()))
    except OSError:
        used = set()
    n = next(n for n in range(150, 1000) if str(n) not in used and not Path(f"/tmp/.X{n}-lock").exists())
    return ["xvfb-run", "-a", "-n", str(n), "-s", f"-screen 0 {screen}"]


def main(argv: list[str]) -> int:
    """``python -m tests.editors.sandbox [trixie|bookworm ...]``: build the roots ahead of a test run."""
    wanted = [r for r in ROOTS if not argv or r.codename in argv]
    status = 0
    for root in wanted:
        why = root.skip_reason()
        if why:
            print(f"{root.label}: unavailable: {why}")
            status = 1
            continue
        start = time.monotonic()
        path = root.ensure_root()
        print(f"{root.label}: {path} ({time.monotonic() - start:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
