"""Editor detection (installer/editors.py) on Linux, Flatpak, AppImage, Windows and macOS, without the editors.

The OS checks, ``shutil.which``, the editors' ``--version`` / ``flatpak info`` / ``ldd`` output and the Python
probes are faked; install folders are real files under tmp_path, so the globbing and path mapping run as they
would on the user's machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.test_install_support import REPO

sys.path.insert(0, str(REPO))

from installer import editors, paths  # noqa: E402
from installer.editors import EditorPython  # noqa: E402


class FakeOS:
    """Which programs exist and what they print; every probed interpreter reports ``version``."""

    def __init__(self, monkeypatch, tmp: Path, system: str, version: str = "3.12") -> None:
        self.which: dict[str, str] = {}
        self.output: dict[tuple[str, ...], str] = {}
        self.home = tmp / "home"
        self.home.mkdir()
        monkeypatch.setenv("HOME", str(self.home))
        for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "APPDATA", "LOCALAPPDATA", "ProgramFiles"):
            monkeypatch.delenv(name, raising=False)
        for module in (paths, editors):
            monkeypatch.setattr(module, "is_windows", lambda: system == "windows")
            monkeypatch.setattr(module, "is_macos", lambda: system == "macos")
        monkeypatch.setattr(editors.shutil, "which", lambda name: self.which.get(name))
        monkeypatch.setattr(editors, "_output", lambda cmd, timeout=20.0: self.output.get(tuple(cmd)))
        monkeypatch.setattr(editors, "probe_python", lambda cmd: EditorPython(command=list(cmd), version=version,
                                                                              platforms=["test"]))

    def program(self, name: str, path: str) -> None:
        self.which[name] = path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


# ---------------------------------------------------------------- Linux


def test_linux_gimp3_uses_its_version_folder_and_interp_python(tmp_path, monkeypatch):
    fake = FakeOS(monkeypatch, tmp_path, "linux")
    fake.program("gimp-3.0", "/usr/bin/gimp-3.0")
    fake.output[("/usr/bin/gimp-3.0", "--version")] = "GNU Image Manipulation Program version 3.0.4\n"
    python = _touch(tmp_path / "usr" / "bin" / "python3.12")
    interp = tmp_path / "pygimp.interp"
    interp.write_text(f"python3={python}\n/usr/bin/python3=/usr/bin/python3\n:Python3:E::py::python3:\n")
    monkeypatch.setattr(editors.glob, "glob", lambda pattern: [str(interp)] if "interpreters" in pattern else [])
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    [gimp] = editors.find_gimp()
    assert gimp.plugins_root == tmp_path / "cfg" / "GIMP" / "3.0" / "plug-ins"
    assert gimp.python.command == [str(python)] and gimp.flatpak is None
    assert "GIMP 3.0" in gimp.label


def test_linux_gimp2_is_reported_unusable(tmp_path, monkeypatch):
    fake = FakeOS(monkeypatch, tmp_path, "linux")
    fake.program("gimp", "/usr/bin/gimp")
    fake.output[("/usr/bin/gimp", "--version")] = "GNU Image Manipulation Program version 2.10.34\n"
    [gimp] = editors.find_gimp()
    assert gimp.plugins_root == Path() and "GIMP 2.x cannot run Python 3 plug-ins" in gimp.notes[0]


def test_flatpak_gimp_and_krita_use_their_sandbox_folders(tmp_path, monkeypatch):
    fake = FakeOS(monkeypatch, tmp_path, "linux", version="3.11")
    fake.program("flatpak", "/usr/bin/flatpak")
    fake.output[("flatpak", "info", editors.GIMP_FLATPAK)] = "GIMP\n  Version: 3.0.4\n"
    fake.output[("flatpak", "info", editors.KRITA_FLATPAK)] = "Krita\n  Version: 5.2.9\n"
    [gimp] = editors.find_gimp()
    assert gimp.plugins_root == fake.home / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins"
    assert gimp.flatpak == editors.GIMP_FLATPAK
    assert gimp.python.command == ["flatpak", "run", "--command=python3", editors.GIMP_FLATPAK]
    [krita] = editors.find_krita()
    assert krita.plugins_root == fake.home / ".var/app/org.kde.krita/data/krita/pykrita"
    assert krita.kritarc == fake.home / ".var/app/org.kde.krita/config/kritarc"
    assert krita.flatpak == editors.KRITA_FLATPAK and krita.python.version == "3.11"


def test_linux_krita_finds_its_embedded_python_and_the_twin_interpreter(tmp_path, monkeypatch):
    fake = FakeOS(monkeypatch, tmp_path, "linux", version="3.11")
    prefix = tmp_path / "usr"
    exe = _touch(prefix / "bin" / "krita")
    twin = _touch(prefix / "bin" / "python3.11")
    lib = _touch(prefix / "lib" / "x86_64-linux-gnu" / "kritaplugins" / "kritapykrita.so")
    fake.program("krita", str(exe))
    fake.program("ldd", "/usr/bin/ldd")
    fake.output[("ldd", str(lib))] = "\tlibpython3.11.so.1.0 => /lib/x86_64-linux-gnu/libpython3.11.so.1.0\n"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    [krita] = editors.find_krita()
    assert krita.plugins_root == tmp_path / "data" / "krita" / "pykrita"
    assert krita.kritarc == tmp_path / "cfg" / "kritarc"
    assert krita.python.command == [str(twin)] and krita.python.version == "3.11"


def test_linux_krita_without_a_twin_python_knows_the_version_only(tmp_path, monkeypatch):
    fake = FakeOS(monkeypatch, tmp_path, "linux")
    exe = _touch(tmp_path / "opt" / "bin" / "krita")
    fake.program("krita", str(exe))
    fake.program("dpkg-query", "/usr/bin/dpkg-query")
    fake.output[("dpkg-query", "-W", "-f=${Depends}", "krita")] = "libc6, libpython3.11 (>= 3.11.0), libqt5core5a"
    [krita] = editors.find_krita()
    assert krita.python.command is None and krita.python.version == "3.11"
    assert krita.plugins_root == fake.home / ".local" / "share" / "krita" / "pykrita"
    assert krita.kritarc == fake.home / ".config" / "kritarc"


def test_krita_appimage_asks_for_its_python_version(tmp_path, monkeypatch):
    fake = FakeOS(monkeypatch, tmp_path, "linux")
    _touch(fake.home / "Applications" / "krita-5.2.9-x86_64.AppImage")
    [krita] = editors.find_krita()
    assert "AppImage" in krita.label and krita.python.command is None and "--krita-python" in krita.python.note
    assert krita.plugins_root == fake.home / ".local" / "share" / "krita" / "pykrita"


def test_nothing_installed_finds_nothing(tmp_path, monkeypatch):
    FakeOS(monkeypatch, tmp_path, "linux")
    assert editors.find_gimp() == [] and editors.find_krita() == []


# ---------------------------------------------------------------- Windows


@pytest.fixture
def windows(tmp_path, monkeypatch):
    fake = FakeOS(monkeypatch, tmp_path, "windows", version="3.10")
    for name in ("ProgramFiles", "APPDATA", "LOCALAPPDATA"):
        monkeypatch.setenv(name, str(tmp_path / name))
    return fake


def test_windows_gimp_uses_appdata_and_the_bundled_python(tmp_path, windows):
    install = tmp_path / "ProgramFiles" / "GIMP 3"
    _touch(install / "bin" / "gimp-3.0.exe")
    [gimp] = editors.find_gimp()
    assert gimp.plugins_root == tmp_path / "APPDATA" / "GIMP" / "3.0" / "plug-ins"
    assert gimp.python.command == [str(install / "bin" / "python.exe")]


def test_windows_gimp_installed_per_user_is_found_too(tmp_path, windows):
    _touch(tmp_path / "LOCALAPPDATA" / "Programs" / "GIMP 3" / "bin" / "gimp-3.0.exe")
    [gimp] = editors.find_gimp()
    assert gimp.plugins_root == tmp_path / "APPDATA" / "GIMP" / "3.0" / "plug-ins"


def test_windows_krita_reads_the_python_dll_version(tmp_path, windows):
    _touch(tmp_path / "ProgramFiles" / "Krita (x64)" / "bin" / "python310.dll")
    [krita] = editors.find_krita()
    assert krita.plugins_root == tmp_path / "APPDATA" / "krita" / "pykrita"
    assert krita.kritarc == tmp_path / "LOCALAPPDATA" / "kritarc"
    assert krita.python.version == "3.10" and krita.python.command is None


# ---------------------------------------------------------------- macOS


@pytest.fixture
def macos(tmp_path, monkeypatch):
    fake = FakeOS(monkeypatch, tmp_path, "macos", version="3.11")
    apps = tmp_path / "Applications"
    real_glob = editors.glob.glob
    # The detection globs /Applications; the fake one lives under tmp_path.
    monkeypatch.setattr(editors.glob, "glob", lambda pattern: real_glob(
        str(apps) + pattern[len("/Applications"):] if pattern.startswith("/Applications/") else pattern))
    return fake, apps


def test_macos_gimp_uses_application_support_and_the_bundled_python(macos):
    fake, apps = macos
    exe = _touch(apps / "GIMP.app" / "Contents" / "MacOS" / "gimp")
    py = _touch(apps / "GIMP.app" / "Contents" / "MacOS" / "python3")
    fake.output[(str(exe), "--version")] = "GNU Image Manipulation Program version 3.0.4"
    [gimp] = editors.find_gimp()
    assert gimp.plugins_root == fake.home / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins"
    assert gimp.python.command == [str(py)]


def test_macos_krita_uses_the_lowercase_resource_folder(macos):
    fake, apps = macos
    (apps / "krita.app" / "Contents" / "Frameworks" / "Python.framework" / "Versions" / "3.10").mkdir(parents=True)
    [krita] = editors.find_krita()
    # Krita's application name is "krita": its resources (pykrita included) live in ".../Application Support/krita".
    assert krita.plugins_root == fake.home / "Library" / "Application Support" / "krita" / "pykrita"
    assert krita.kritarc == fake.home / "Library" / "Preferences" / "kritarc"
    assert krita.python.version == "3.10"
