"""install.py against the real editors: it finds them, installs the plug-ins, and ``--check`` passes for them.

- Krita 5.1.5 (Debian 12 root, ``krita`` marker): ``--krita-dir`` and ``--kritarc`` under an isolated HOME plus the
  root's own ``python3`` (the interpreter Krita embeds) as ``--krita-python``; ``--check`` must show the plug-in
  installed, enabled and importable there, and the real Krita (``kritarunner``) must import the installed plug-in.
- GIMP 3.0.4 (Debian 13 root, ``gimp`` marker): ``--gimp-dir`` plus the root's own ``python3`` as
  ``--gimp-python``; ``--check`` must pass for it, and the real GIMP must register the plug-in's procedures.

Both editors run from the sandbox roots of tests/editors/sandbox.py, so nothing is installed on the host. The
backend is the development interpreter (``--backend-python``): no venv is built here (see
tests/test_install_venv.py). Both skip where the roots cannot be had, and fail instead under CI=true.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.editors import sandbox
from tests.test_install_support import isolated_env, row, run_install

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


def _check_rows(out: str, kind: str, rows: tuple[str, ...]) -> None:
    for item in (kind, *(f"{kind} {r}" for r in rows)):
        assert " ok " in row(out, item), f"{item!r} not ok:\n{out}"


@pytest.mark.krita
def test_install_py_installs_into_the_real_krita_51(tmp_path):
    sandbox.require(sandbox.BOOKWORM)
    env = isolated_env(tmp_path)
    home = Path(env["HOME"])
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    kritarc = home / ".config" / "kritarc"
    args = ["--yes", "--backend-python", sys.executable, "--no-gimp", "--krita-dir", str(pykrita),
            "--kritarc", str(kritarc), "--krita-python", str(sandbox.BOOKWORM.python_wrapper(tmp_path))]
    first = run_install(args, env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (pykrita / "dfimat.desktop").is_file() and (pykrita / "dfimat" / "__init__.py").is_file()

    check = run_install(["--check", *args[1:]], env, timeout=600)
    print(check.stdout)
    assert check.returncode == 0, check.stdout
    _check_rows(check.stdout, "krita", ("plugin", "enabled", "imports"))
    assert "(3.11)" in row(check.stdout, "krita")  # Debian 12's python3, the one Krita 5.1.5 embeds

    # The real Krita imports what was installed, from the folder install.py chose.
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "dfimat_install_probe.py").write_text(_KRITA_PROBE)
    report = tmp_path / "krita-probe.json"
    kenv = {"HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "DFIMAT_NO_REGISTER": "1",
            "PROBE_PYKRITA": str(pykrita), "PROBE_OUT": str(report), "PYTHONPATH": str(tmp_path / "probe")}
    run = sandbox.BOOKWORM.run_in_root(["kritarunner", "-s", "dfimat_install_probe", "-f", "main"], binds=[tmp_path],
                                       env=kenv, cwd=tmp_path, timeout=600)
    # kritarunner exits 0 even when the script raises: only the report counts.
    assert report.is_file(), f"no report (rc {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(report.read_text())
    print("krita import:", json.dumps(result))
    assert result["ok"], result.get("error")
    assert result["krita"].startswith("5.1") and result["plugin"].startswith(str(pykrita))
    assert result["client"].startswith(str(pykrita / "dfimat" / "vendor"))


@pytest.mark.gimp
def test_install_py_installs_into_the_real_gimp3(tmp_path):
    sandbox.require(sandbox.TRIXIE)
    env = isolated_env(tmp_path)
    home = Path(env["HOME"])
    plug_ins = home / ".config" / "GIMP" / "3.0" / "plug-ins"
    args = ["--yes", "--backend-python", sys.executable, "--no-krita", "--gimp-dir", str(plug_ins),
            "--gimp-python", str(sandbox.TRIXIE.python_wrapper(tmp_path))]
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
    run = sandbox.TRIXIE.run_in_root(["gimp-console-3.0", "-i", "--no-splash", "--batch-interpreter=python-fu-eval",
                                "-b", "-", "--quit"], binds=[tmp_path],
                               env={"HOME": str(home), "PROBE_OUT": str(report)}, input=_GIMP_PROBE, timeout=900)
    assert report.is_file(), f"no report (rc {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(report.read_text())
    print("gimp registration:", json.dumps(result))
    assert result["version"].startswith("3.0") and all(result["procedures"].values()), result

