"""Find GIMP 3 and Krita, their plug-in folders and the Python each one runs plug-ins with.

Detection is best effort and always overridable (``--gimp-dir``, ``--krita-dir``, ``--gimp-python``,
``--krita-python``): a wrong guess must never stop the rest of the install.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from installer.paths import config_home, data_home, home, is_macos, is_windows

GIMP_FLATPAK = "org.gimp.GIMP"
KRITA_FLATPAK = "org.kde.krita"
_VERSION_ONLY = re.compile(r"^3\.\d+$")


@dataclass
class EditorPython:
    """The interpreter an editor runs plug-ins with: a runnable command, or only its version when it is embedded."""

    command: list[str] | None = None
    version: str | None = None  # "3.11"
    platforms: list[str] = field(default_factory=list)  # pip --platform tags for vendoring wheels
    note: str = ""

    def describe(self) -> str:
        if self.command:
            return " ".join(self.command) + (f" ({self.version})" if self.version else "")
        if self.version:
            return f"embedded Python {self.version}"
        return "unknown Python"


@dataclass
class Editor:
    kind: str  # "gimp" | "krita"
    label: str
    plugins_root: Path
    python: EditorPython
    kritarc: Path | None = None
    flatpak: str | None = None
    notes: list[str] = field(default_factory=list)


def _output(cmd: list[str], timeout: float = 20.0) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout + out.stderr if out.returncode == 0 else None


_PROBE = (
    "import platform, sys, sysconfig; v = sys.version_info; "
    "print(f'{v[0]}.{v[1]}', sysconfig.get_platform(), platform.libc_ver()[1] or '-')"
)


def probe_python(command: list[str]) -> EditorPython | None:
    """Ask an interpreter for its version and platform (for pip's ``--platform``); None when it does not run."""
    out = _output([*command, "-c", _PROBE], timeout=60)
    if not out:
        return None
    parts = out.strip().splitlines()[-1].split()
    if len(parts) != 3:
        return None
    version, plat, libc = parts
    return EditorPython(command=command, version=version, platforms=pip_platforms(plat, libc))


def pip_platforms(sysconfig_platform: str, glibc: str = "-") -> list[str]:
    """pip ``--platform`` values for a ``sysconfig.get_platform()`` string (pip widens manylinux/macosx itself)."""
    plat = sysconfig_platform.replace("-", "_").replace(".", "_")
    if plat.startswith("linux_"):
        arch = plat[len("linux_") :]
        m = re.match(r"(\d+)\.(\d+)", glibc)
        tags = [f"manylinux_{m.group(1)}_{m.group(2)}_{arch}"] if m else []
        return [*tags, f"manylinux2014_{arch}"]
    if plat.startswith("macosx_"):
        return [plat, re.sub(r"_(x86_64|arm64)$", "_universal2", plat)]
    if plat in ("win_amd64", "win32", "win_arm64"):
        return [plat]
    return [plat]


def host_platforms() -> list[str]:
    import platform
    import sysconfig

    return pip_platforms(sysconfig.get_platform(), platform.libc_ver()[1] or "-")


def python_override(value: str) -> EditorPython:
    """``--gimp-python``/``--krita-python``: an interpreter command line, or just a version like ``3.10``."""
    if _VERSION_ONLY.match(value):
        return EditorPython(version=value, platforms=host_platforms())
    # A path with spaces (C:\Program Files\...) is one argument; anything else is a command line.
    command = [value] if Path(value).exists() else shlex.split(value, posix=not is_windows())
    probed = probe_python(command)
    if probed is None:
        raise ValueError(f"{value!r} does not run as a Python interpreter")
    return probed


def _flatpak_installed(app: str) -> str | None:
    """The Flatpak app's version when it is installed."""
    if not shutil.which("flatpak"):
        return None
    out = _output(["flatpak", "info", app])
    if out is None:
        return None
    m = re.search(r"Version:\s*(\S+)", out)
    return m.group(1) if m else "?"


def _flatpak_python(app: str) -> EditorPython:
    py = probe_python(["flatpak", "run", "--command=python3", app])
    return py or EditorPython(note=f"could not run python3 inside {app}")


# ---------------------------------------------------------------- GIMP


def _gimp_version(exe: str) -> tuple[int, int] | None:
    out = _output([exe, "--version"])
    m = re.search(r"version (\d+)\.(\d+)", out or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _gimp_python_linux() -> EditorPython:
    """GIMP 3 runs Python plug-ins with the interpreter named in its ``pygimp.interp`` (Debian: /usr/bin/python3)."""
    # Fixed depths only: a recursive glob over /usr/lib takes minutes.
    interps = glob.glob("/usr/lib*/gimp/3.*/interpreters/*.interp") + glob.glob(
        "/usr/lib*/*/gimp/3.*/interpreters/*.interp")
    for interp in sorted(interps):
        try:
            lines = Path(interp).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip() in ("python3", "python") and value.strip().startswith("/"):
                probed = probe_python([value.strip()])
                if probed:
                    return probed
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).exists():
            probed = probe_python([candidate])
            if probed:
                return probed
    return EditorPython(note="no python3 found for GIMP's Python plug-ins (install python3 and python3-gi)")


def _gimp_dir(version: tuple[int, int] | None, base: Path) -> Path:
    major, minor = version or (3, 0)
    return base / "GIMP" / f"{major}.{minor}" / "plug-ins"


def find_gimp() -> list[Editor]:
    found: list[Editor] = []
    if is_windows():
        roots = [os.environ.get("ProgramFiles", r"C:\Program Files"), os.environ.get("LOCALAPPDATA", "")]
        for root in roots:
            for d in sorted(glob.glob(os.path.join(root, "GIMP 3*")) + glob.glob(os.path.join(root, "Programs", "GIMP 3*"))):
                exes = glob.glob(os.path.join(d, "bin", "gimp-3*.exe"))
                if exes:
                    py = probe_python([os.path.join(d, "bin", "python.exe")]) or EditorPython(
                        note="GIMP's bundled python.exe did not run"
                    )
                    found.append(Editor("gimp", f"GIMP 3 ({exes[0]})", _gimp_dir(None, config_home()), py))
                    break
    elif is_macos():
        for app in sorted(glob.glob("/Applications/GIMP*.app")):
            exe = Path(app) / "Contents" / "MacOS" / "gimp"
            version = _gimp_version(str(exe)) if exe.exists() else None
            if version and version[0] >= 3:
                py_exe = Path(app) / "Contents" / "MacOS" / "python3"
                py = probe_python([str(py_exe)]) if py_exe.exists() else None
                found.append(
                    Editor("gimp", f"GIMP {version[0]}.{version[1]} ({app})", _gimp_dir(version, config_home()),
                           py or EditorPython(note=f"no runnable python3 inside {app}"))
                )
    else:
        seen: set[str] = set()
        for name in ("gimp-3.0", "gimp-3", "gimp"):
            exe = shutil.which(name)
            if not exe or os.path.realpath(exe) in seen:
                continue
            seen.add(os.path.realpath(exe))
            version = _gimp_version(exe)
            if version is None:
                continue
            if version[0] < 3:
                found_old = Editor("gimp", f"GIMP {version[0]}.{version[1]} ({exe})", Path(), EditorPython())
                found_old.notes.append("GIMP 2.x cannot run Python 3 plug-ins; install GIMP 3")
                found.append(found_old)
                continue
            found.append(
                Editor("gimp", f"GIMP {version[0]}.{version[1]} ({exe})", _gimp_dir(version, config_home()),
                       _gimp_python_linux())
            )
            break
        fv = _flatpak_installed(GIMP_FLATPAK)
        if fv:
            m = re.match(r"(\d+)\.(\d+)", fv)
            version = (int(m.group(1)), int(m.group(2))) if m else None
            base = home() / ".var" / "app" / GIMP_FLATPAK / "config"
            ed = Editor("gimp", f"GIMP {fv} (Flatpak {GIMP_FLATPAK})", _gimp_dir(version, base),
                        _flatpak_python(GIMP_FLATPAK), flatpak=GIMP_FLATPAK)
            found.append(ed)
    return [e for e in found if e.plugins_root != Path() or e.notes]


# ---------------------------------------------------------------- Krita


def _krita_python_linux(exe: str) -> EditorPython:
    """Krita embeds libpython: find its version from the pykrita plug-in's linkage, then Debian's package deps."""
    version = None
    prefix = Path(os.path.realpath(exe)).parent.parent
    libs = sorted(glob.glob(str(prefix / "lib*" / "kritaplugins" / "kritapykrita.so"))
                  + glob.glob(str(prefix / "lib*" / "*" / "kritaplugins" / "kritapykrita.so")))
    for lib in [*libs, os.path.realpath(exe)]:
        out = _output(["ldd", lib]) if shutil.which("ldd") else None
        m = re.search(r"libpython(3\.\d+)", out or "")
        if m:
            version = m.group(1)
            break
    if version is None and shutil.which("dpkg-query"):
        out = _output(["dpkg-query", "-W", "-f=${Depends}", "krita"])
        m = re.search(r"libpython(3\.\d+)", out or "")
        version = m.group(1) if m else None
    if version is None:
        return EditorPython(note="could not tell which Python Krita embeds; pass --krita-python")
    # A distribution's python3.X shares the embedded interpreter's stdlib and dist-packages, so it sees
    # exactly the modules Krita sees.
    twin = prefix / "bin" / f"python{version}"
    if twin.exists():
        probed = probe_python([str(twin)])
        if probed and probed.version == version:
            return probed
    return EditorPython(version=version, platforms=host_platforms(), note=f"no python{version} next to Krita")


def _appimages() -> list[str]:
    pats = ["Applications", "Downloads", "bin", ".local/bin"]
    return sorted(p for d in pats for p in glob.glob(str(home() / d / "[Kk]rita*.AppImage")))


def find_krita() -> list[Editor]:
    found: list[Editor] = []
    if is_windows():
        root = os.environ.get("ProgramFiles", r"C:\Program Files")
        for d in sorted(glob.glob(os.path.join(root, "Krita*"))):
            dlls = sorted(glob.glob(os.path.join(d, "bin", "python3*.dll")))
            m = re.search(r"python3(\d+)\.dll$", dlls[-1]) if dlls else None
            py = EditorPython(version=f"3.{m.group(1)}", platforms=host_platforms()) if m else EditorPython(
                note=f"no python3*.dll in {d}\\bin")
            found.append(Editor("krita", f"Krita ({d})", config_home() / "krita" / "pykrita", py,
                                kritarc=data_home() / "kritarc"))
            break
    elif is_macos():
        for app in sorted(glob.glob("/Applications/[Kk]rita*.app")):
            vers = sorted(glob.glob(f"{app}/Contents/Frameworks/Python.framework/Versions/3.*"))
            py = EditorPython(version=Path(vers[-1]).name, platforms=host_platforms()) if vers else EditorPython(
                note=f"no Python.framework inside {app}")
            # Krita names its resource folder after its application name, "krita" (lower case): on a
            # case-sensitive APFS volume "Krita/pykrita" would be a folder Krita never reads.
            found.append(Editor("krita", f"Krita ({app})", data_home() / "krita" / "pykrita", py,
                                kritarc=home() / "Library" / "Preferences" / "kritarc"))
            break
    else:
        exe = shutil.which("krita")
        if exe:
            found.append(Editor("krita", f"Krita ({exe})", data_home() / "krita" / "pykrita",
                                _krita_python_linux(exe), kritarc=config_home() / "kritarc"))
        fv = _flatpak_installed(KRITA_FLATPAK)
        if fv:
            base = home() / ".var" / "app" / KRITA_FLATPAK
            found.append(Editor("krita", f"Krita {fv} (Flatpak {KRITA_FLATPAK})", base / "data" / "krita" / "pykrita",
                                _flatpak_python(KRITA_FLATPAK), kritarc=base / "config" / "kritarc",
                                flatpak=KRITA_FLATPAK))
        images = _appimages()
        if images and not exe:
            py = EditorPython(note="the AppImage embeds its own Python: pass --krita-python 3.X (its version)")
            found.append(Editor("krita", f"Krita AppImage ({images[0]})", data_home() / "krita" / "pykrita", py,
                                kritarc=config_home() / "kritarc"))
    return found


def overridden(kind: str, plugins_root: Path, python: EditorPython | None, kritarc: Path | None) -> Editor:
    """An editor described by command-line overrides; detection only fills in the Python when not given."""
    if python is None:
        detected = [e for e in (find_gimp() if kind == "gimp" else find_krita()) if e.plugins_root != Path()]
        python = detected[0].python if detected else EditorPython(note="editor not found; pass --" + kind + "-python")
    if kind == "krita" and kritarc is None:
        kritarc = config_home() / "kritarc"
    return Editor(kind, f"{'GIMP' if kind == 'gimp' else 'Krita'} (folder given: {plugins_root})",
                  Path(plugins_root), python, kritarc=kritarc)


# ---------------------------------------------------------------- imports inside the editor's Python

_IMPORT_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import zmq
import dfimat_client
import os
for root, dirs, files in os.walk(sys.argv[2]):
    dirs[:] = [d for d in dirs if d not in ("vendor", "__pycache__")]
    for name in files:
        if name.endswith(".py"):
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                compile(fh.read(), path, "exec")
print("zmq", zmq.__version__, "from", zmq.__file__)
"""


def import_probe(python: EditorPython, plugin_dir: Path) -> tuple[bool | None, str]:
    """Can the editor's Python import zmq and the vendored client, and compile the plug-in's sources?

    (None, why) when the interpreter cannot be run from outside the editor.
    """
    if not python.command:
        return None, python.note or "the editor's Python cannot be run from outside the editor"
    vendor = Path(plugin_dir) / "vendor"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        out = subprocess.run([*python.command, "-c", _IMPORT_PROBE, str(vendor), str(plugin_dir)],
                             capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if out.returncode:
        lines = out.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"exit code {out.returncode}"
    return True, out.stdout.strip()


def zmq_importable(python: EditorPython, vendor: Path) -> bool | None:
    if not python.command:
        return None
    code = "import sys; sys.path.insert(0, sys.argv[1]); import zmq"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        out = subprocess.run([*python.command, "-c", code, str(vendor)], capture_output=True, timeout=60, env=env,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def vendor_pyzmq(pip_python: Path | str, python: EditorPython, vendor: Path, log=print) -> None:
    """Install a pyzmq wheel built for the editor's Python version/platform into ``vendor``."""
    if not python.version:
        raise RuntimeError("the editor's Python version is unknown")
    cmd = [str(pip_python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--upgrade",
           "--target", str(vendor), "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python.version]
    for tag in python.platforms or host_platforms():
        cmd += ["--platform", tag]
    cmd.append("pyzmq>=25")
    log("  + " + " ".join(cmd))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        lines = (out.stderr or out.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"pip exit code {out.returncode}")


def zmq_hint(editor: Editor) -> str:
    if editor.flatpak:
        return f"the Flatpak {editor.flatpak} Python lacks pyzmq and vendoring failed; rerun with network access"
    if not is_windows() and not is_macos() and shutil.which("apt-get"):
        return "install it system-wide: sudo apt-get install python3-zmq"
    return "rerun install.py with network access so pyzmq can be vendored into the plug-in folder"

