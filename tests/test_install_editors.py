"""install.py against the real editors: it finds them, installs the plug-ins, and ``--check`` passes for them.

- Krita 5.1.5 (Debian 12 apt, ``krita`` marker): install.py auto-detects ``/usr/bin/krita`` under an isolated HOME,
  installs into its pykrita folder and kritarc; ``--check`` must show the plug-in installed, enabled and importable
  in the Python Krita embeds, and the real Krita (``kritarunner``) must import the installed plug-in.
- GIMP 3.0.4 (Debian 13 root, ``gimp`` marker): ``--gimp-dir`` plus the root's own ``python3`` as
  ``--gimp-python``; ``--check`` must pass for it, and the real GIMP must register the plug-in's procedures.

The backend is the development interpreter (``--backend-python``): no venv is built here (see
tests/test_install_venv.py). Both skip, with the reason printed, where the editor cannot be had.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_install_support import isolated_env, row, run_install

# Krita's embedded Python finds its standard library through the first python3 on PATH; a venv or pyenv one there
# would hide Debian's PyQt5 (see tests/test_krita_real.py), so Krita runs with the system folders only.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

_KRITA_PROBE = '''
import json, os, sys, traceback


def main(*args):
    report = {"ok": False}
    try:
        sys.path.insert(0, os.environ["PROBE_PYKRITA"])
        import krita
        import dfimat
        from dfimat import controller, docker, extension
        import dfimat_client
        import zmq
        report.update(ok=True, python=sys.version.split()[0], plugin=dfimat.__file__, client=dfimat_client.__file__,
                      zmq=zmq.__version__, krita=krita.Krita.instance().version())
    except Exception:
        report["error"] = traceback.format_exc()
    with open(os.environ["PROBE_OUT"], "w") as fh:
        json.dump(report, fh)
    return 0
'''

_GIMP_PROBE = '''
import json, os
from gi.repository import Gimp
names = ["plug-in-dfimat-select-person", "plug-in-dfimat-layer-mask", "plug-in-dfimat-batch-masks",
         "plug-in-dfimat-split-people", "plug-in-dfimat-reset"]
pdb = Gimp.get_pdb()
with open(os.environ["PROBE_OUT"], "w") as fh:
    json.dump({"version": Gimp.version(), "procedures": {n: pdb.procedure_exists(n) for n in names}}, fh)
'''


def _skip(reason: str) -> None:
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def _check_rows(out: str, kind: str, rows: tuple[str, ...]) -> None:
    for item in (kind, *(f"{kind} {r}" for r in rows)):
        assert " ok " in row(out, item), f"{item!r} not ok:\n{out}"


@pytest.mark.krita
def test_install_py_finds_and_installs_into_the_real_krita(tmp_path):
    from tests.krita_harness import realtest

    reason = realtest.ensure_krita_51()
    if reason:
        _skip(reason)
    env = isolated_env(tmp_path)
    args = ["--yes", "--backend-python", sys.executable, "--no-gimp"]
    first = run_install(args, env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[krita] Krita (/usr/bin/krita)" in first.stdout, first.stdout
    pykrita = Path(env["XDG_DATA_HOME"]) / "krita" / "pykrita"
    assert (pykrita / "dfimat.desktop").is_file() and (pykrita / "dfimat" / "__init__.py").is_file()

    check = run_install(["--check", *args[1:]], env, timeout=600)
    print(check.stdout)
    assert check.returncode == 0, check.stdout
    _check_rows(check.stdout, "krita", ("plugin", "enabled", "imports"))
    assert "python3.11" in row(check.stdout, "krita")  # the interpreter sharing Krita's embedded stdlib

    # The real Krita imports what was installed, from the folder install.py chose.
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "dfimat_install_probe.py").write_text(_KRITA_PROBE)
    report = tmp_path / "krita-probe.json"
    kenv = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("QT_")}
    kenv.update(PATH=SYSTEM_PATH, QT_QPA_PLATFORM="offscreen", DFIMAT_NO_REGISTER="1", PROBE_PYKRITA=str(pykrita),
                PROBE_OUT=str(report), PYTHONPATH=str(tmp_path / "probe"))
    run = subprocess.run(["kritarunner", "-s", "dfimat_install_probe", "-f", "main"], env=kenv, capture_output=True,
                         text=True, timeout=600, cwd=tmp_path)
    # kritarunner exits 0 even when the script raises: only the report counts.
    assert report.is_file(), f"no report (rc {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(report.read_text())
    print("krita import:", json.dumps(result))
    assert result["ok"], result.get("error")
    assert result["krita"].startswith("5.1") and result["plugin"].startswith(str(pykrita))
    assert result["client"].startswith(str(pykrita / "dfimat" / "vendor"))


def _root_python(root: Path, visible: Path) -> Path:
    """An executable that runs the Debian 13 root's python3 (GIMP's plug-in interpreter) with ``visible`` bound
    at the same path, so install.py can use it as ``--gimp-python`` like any interpreter."""
    python = "/usr/bin/python3"
    if root != Path("/"):
        # Read-only: the cached root stays as built. Same sandbox as tests/editors/debian13.run_in_root.
        python = " ".join(shlex.quote(a) for a in [
            "bwrap", "--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--bind", str(visible), str(visible), "--unshare-pid", "--die-with-parent", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", "/tmp",
            "/usr/bin/python3"])
    script = visible / "gimp-python3"
    script.write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    script.chmod(0o755)
    return script


@pytest.mark.gimp
def test_install_py_installs_into_the_real_gimp3(tmp_path):
    from tests.editors import debian13

    reason = debian13.skip_reason()
    if reason:
        _skip(f"GIMP 3 comes from the Debian 13 root here: {reason}")
    root = debian13.ensure_root()
    env = isolated_env(tmp_path)
    home = Path(env["HOME"])
    plug_ins = home / ".config" / "GIMP" / "3.0" / "plug-ins"
    args = ["--yes", "--backend-python", sys.executable, "--no-krita", "--gimp-dir", str(plug_ins),
            "--gimp-python", str(_root_python(root, tmp_path))]
    first = run_install(args, env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert os.access(plug_ins / "dfimat" / "dfimat.py", os.X_OK)

    check = run_install(["--check", *args[1:]], env, timeout=600)
    print(check.stdout)
    assert check.returncode == 0, check.stdout
    _check_rows(check.stdout, "gimp", ("plugin", "imports"))
    assert "(3.13)" in row(check.stdout, "gimp") and "dist-packages/zmq" in row(check.stdout, "gimp imports")

    # The real GIMP, started with that HOME, registers the installed plug-in's procedures (its menu entries).
    report = tmp_path / "gimp-probe.json"
    run = debian13.run_in_root(["gimp-console-3.0", "-i", "--no-splash", "--batch-interpreter=python-fu-eval",
                                "-b", "-", "--quit"], binds=[tmp_path],
                               env={"HOME": str(home), "PROBE_OUT": str(report)}, input=_GIMP_PROBE, timeout=900)
    assert report.is_file(), f"no report (rc {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(report.read_text())
    print("gimp registration:", json.dumps(result))
    assert result["version"].startswith("3.0") and all(result["procedures"].values()), result

