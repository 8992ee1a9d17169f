"""install.py end to end into temporary folders (offline, fake editor folders, a copy of the committed models),
plus its building blocks. ``--check`` starts the real backend with the committed weights when none is running."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_install_support import (
    REPO,
    REPO_MODELS,
    copy_real_models,
    expected_endpoint,
    fast_args,
    isolated_env,
    row,
    run_install,
    snapshot,
)

sys.path.insert(0, str(REPO))

import install  # noqa: E402
from installer import paths, plugins  # noqa: E402


@pytest.fixture
def setup(tmp_path):
    env = isolated_env(tmp_path)
    models = copy_real_models(tmp_path / "models")
    return tmp_path, env, models


def _config(env) -> dict:
    return json.loads((Path(env["XDG_CONFIG_HOME"]) / "dfimat" / "config.json").read_text())


# ---------------------------------------------------------------- plugin copying (the contract functions)


def _fake_sources(tmp: Path, monkeypatch) -> Path:
    src = tmp / "src"
    (src / "gimp" / "__pycache__").mkdir(parents=True)
    (src / "gimp" / "dfimat.py").write_text("#!/usr/bin/env python3\n")
    (src / "gimp" / "helper.py").write_text("x = 1\n")
    (src / "gimp" / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"\0")
    (src / "client").mkdir()
    (src / "client" / "__init__.py").write_text("")
    (src / "krita" / "dfimat").mkdir(parents=True)
    (src / "krita" / "dfimat" / "__init__.py").write_text("")
    (src / "krita" / "dfimat.desktop").write_text("[Desktop Entry]\n")
    monkeypatch.setattr(plugins, "GIMP_SRC", src / "gimp")
    monkeypatch.setattr(plugins, "CLIENT_SRC", src / "client")
    monkeypatch.setattr(plugins, "KRITA_SRC", src / "krita" / "dfimat")
    monkeypatch.setattr(plugins, "KRITA_DESKTOP", src / "krita" / "dfimat.desktop")
    return src


def test_gimp_plugin_is_executable_vendored_and_without_caches(tmp_path, monkeypatch):
    src = _fake_sources(tmp_path, monkeypatch)
    dest = install.install_gimp_plugin(tmp_path / "plug-ins")
    assert dest == tmp_path / "plug-ins" / "dfimat"
    assert os.access(dest / "dfimat.py", os.X_OK)
    assert (dest / "vendor" / "dfimat_client" / "__init__.py").is_file()
    assert not (dest / "__pycache__").exists()
    # An upgrade drops modules the new version no longer has, but keeps the vendored pyzmq.
    (dest / "vendor" / "zmq").mkdir()
    (src / "gimp" / "helper.py").unlink()
    install.install_gimp_plugin(tmp_path / "plug-ins")
    assert not (dest / "helper.py").exists()
    assert (dest / "vendor" / "zmq").is_dir()


def test_krita_plugin_enabled_without_disturbing_kritarc(tmp_path, monkeypatch):
    _fake_sources(tmp_path, monkeypatch)
    rc = tmp_path / "kritarc"
    original = "[General]\nSomeKey=1\n# a comment\n\n[python]\nenable_other=true\nenable_dfimat=false\n\n[Zoo][Sub]\nCase=Keep\n"
    rc.write_text(original)
    dest = install.install_krita_plugin(tmp_path / "pykrita", rc)
    assert (tmp_path / "pykrita" / "dfimat.desktop").is_file()
    assert (dest / "vendor" / "dfimat_client" / "__init__.py").is_file()
    assert rc.read_text() == original.replace("enable_dfimat=false", "enable_dfimat=true")
    assert plugins.remove_kritarc_key(rc, "python", "enable_dfimat")
    assert rc.read_text() == original.replace("enable_dfimat=false\n", "")


def test_kritarc_without_python_section_gets_one(tmp_path):
    rc = tmp_path / "kritarc"
    rc.write_text("[General]\nA=1")
    assert plugins.set_kritarc_key(rc, "python", "enable_dfimat", "true")
    assert rc.read_text() == "[General]\nA=1\n\n[python]\nenable_dfimat=true\n"
    assert not plugins.set_kritarc_key(rc, "python", "enable_dfimat", "true")


def test_real_plugin_folders_install(tmp_path):
    gimp = install.install_gimp_plugin(tmp_path / "g")
    krita = install.install_krita_plugin(tmp_path / "k", tmp_path / "kritarc")
    assert plugins.plugin_drift("gimp", gimp) == []
    assert plugins.plugin_drift("krita", krita) == []


def test_endpoint_prefers_a_user_socket(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "is_windows", lambda: False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert paths.default_endpoint() == f"ipc://{tmp_path}/dfimat/backend.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert paths.default_endpoint() == "tcp://127.0.0.1:5599"


# ---------------------------------------------------------------- end to end


def test_install_is_offline_complete_and_idempotent(setup):
    tmp, env, models = setup
    first = run_install(fast_args(tmp), env)
    assert first.returncode == 0, first.stdout + first.stderr
    conf = _config(env)
    from backend import __version__

    assert conf["schema"] == 1 and conf["device"] in ("cpu", "cuda") and conf["version"] == __version__
    assert conf["backend_command"] == [sys.executable, "-m", "backend", "serve"]
    assert conf["models_dir"] == str(models.parent.parent)
    assert conf["endpoint"] == expected_endpoint(env)
    token = Path(conf["token_file"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) == 64
    assert os.access(tmp / "gimp-plug-ins" / "dfimat" / "dfimat.py", os.X_OK)
    assert "enable_dfimat=true" in (tmp / "kritarc").read_text()

    before = snapshot(tmp)
    second = run_install(fast_args(tmp), env)
    assert second.returncode == 0, second.stderr
    steps = [line for line in second.stdout.splitlines() if line.startswith("[")]
    assert len(steps) == 5 and all(line.endswith("nothing to do") for line in steps), second.stdout
    assert snapshot(tmp) == before


def test_check_passes_then_catches_corrupt_model_and_missing_plugin(setup):
    tmp, env, models = setup
    assert run_install(fast_args(tmp), env).returncode == 0
    check_args = ["--check", *fast_args(tmp)[1:]]
    ok = run_install(check_args, env)
    assert ok.returncode == 0, ok.stdout
    assert "FAIL" not in ok.stdout and "gimp imports" in ok.stdout and "krita enabled" in ok.stdout
    # Nothing was running, so --check started the recorded backend, which loaded the committed model.
    assert " ok " in row(ok.stdout, "backend reachable") and "trial start answered hello" in ok.stdout, ok.stdout

    data = bytearray(models.read_bytes())
    data[1000] ^= 0xFF  # same size, different content: only the hash can tell
    models.write_bytes(bytes(data))
    bad = run_install(check_args, env)
    assert bad.returncode == 1
    assert any("FAIL" in line and "sha256" in line for line in bad.stdout.splitlines()), bad.stdout

    models.write_bytes((REPO_MODELS / "dfimat-s" / "dfimat-s.pt").read_bytes())
    (tmp / "pykrita" / "dfimat.desktop").unlink()
    bad = run_install(check_args, env)
    assert bad.returncode == 1
    assert any(line.startswith("krita plugin") and "FAIL" in line and "dfimat.desktop missing" in line
               for line in bad.stdout.splitlines()), bad.stdout


def test_rerun_repairs_a_damaged_install(setup):
    tmp, env, models = setup
    assert run_install(fast_args(tmp), env).returncode == 0
    entry = tmp / "gimp-plug-ins" / "dfimat" / "dfimat.py"
    entry.chmod(0o644)
    (tmp / "pykrita" / "dfimat" / "vendor" / "dfimat_client" / "protocol.py").write_text("broken")
    again = run_install(fast_args(tmp), env)
    assert again.returncode == 0, again.stderr
    assert os.access(entry, os.X_OK)
    assert run_install(["--check", *fast_args(tmp)[1:]], env).returncode == 0


def test_missing_weights_leave_the_install_marked_incomplete(setup):
    tmp, env, models = setup
    models.unlink()
    out = run_install(fast_args(tmp), env)
    assert out.returncode == 1
    assert "no download URL" in out.stderr
    check = run_install(["--check", *fast_args(tmp)[1:]], env)
    assert check.returncode == 1
    assert any(line.startswith("install state") and "incomplete" in line for line in check.stdout.splitlines())
    # The rest of the install still went through, so fixing the model and rerunning finishes it.
    models.write_bytes((REPO_MODELS / "dfimat-s" / "dfimat-s.pt").read_bytes())
    assert run_install(fast_args(tmp), env).returncode == 0
    assert run_install(["--check", *fast_args(tmp)[1:]], env).returncode == 0


def test_uninstall_removes_only_what_it_installed(setup):
    tmp, env, models = setup
    (tmp / "pykrita").mkdir()
    (tmp / "pykrita" / "other_plugin.desktop").write_text("keep me")
    (tmp / "kritarc").write_text("[python]\nenable_other=true\n")
    before = snapshot(tmp)
    assert run_install(fast_args(tmp), env).returncode == 0
    out = run_install(["--uninstall", "--yes"], env)
    assert out.returncode == 0, out.stderr
    after = snapshot(tmp)
    assert set(after) == set(before)
    assert (tmp / "kritarc").read_text() == "[python]\nenable_other=true\n"
    assert not (tmp / "gimp-plug-ins").exists()  # created by the installer, so removed with it
    assert (tmp / "pykrita" / "other_plugin.desktop").read_text() == "keep me"
    assert run_install(["--uninstall", "--yes"], env).stdout.startswith("nothing to uninstall")


def test_without_yes_and_without_a_terminal_nothing_happens(setup):
    tmp, env, models = setup
    out = run_install(fast_args(tmp)[1:], env)
    assert out.returncode == 1 and "--yes" in out.stderr
    assert not (Path(env["XDG_CONFIG_HOME"]) / "dfimat").exists()
    assert not (tmp / "gimp-plug-ins").exists()


def test_pyzmq_is_vendored_for_an_editor_python_that_lacks_it(setup):
    tmp, env, models = setup
    bare = f"{sys.executable} -S"  # no site-packages: like an editor Python without pyzmq
    out = run_install(fast_args(tmp, python=bare), env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "vendoring pyzmq for Python" in out.stdout
    for vendor in (tmp / "gimp-plug-ins" / "dfimat" / "vendor", tmp / "pykrita" / "dfimat" / "vendor"):
        assert (vendor / "zmq" / "__init__.py").is_file()
    check = run_install(["--check", *fast_args(tmp, python=bare)[1:]], env)
    assert check.returncode == 0, check.stdout
    assert "dfimat/vendor/zmq" in check.stdout


def test_kritarc_created_by_the_installer_goes_away_on_removal(tmp_path):
    rc = tmp_path / "kritarc"
    assert plugins.set_kritarc_key(rc, "python", "enable_dfimat", "true")
    assert plugins.kritarc_enabled(rc)
    assert plugins.remove_kritarc_key(rc, "python", "enable_dfimat")
    assert not rc.exists()


def test_pip_platform_tags_for_editor_pythons():
    from installer.editors import pip_platforms, python_override

    assert pip_platforms("linux-x86_64", "2.36") == ["manylinux_2_36_x86_64", "manylinux2014_x86_64"]
    assert pip_platforms("macosx-11.0-arm64") == ["macosx_11_0_arm64", "macosx_11_0_universal2"]
    assert pip_platforms("win-amd64") == ["win_amd64"]
    embedded = python_override("3.10")  # e.g. the Krita AppImage: only the version is known
    assert embedded.command is None and embedded.version == "3.10" and embedded.platforms
    with pytest.raises(ValueError, match="does not run"):
        python_override("/nonexistent/python3")


def test_a_non_venv_folder_is_never_cleared(tmp_path):
    from installer.venv import ensure_venv

    precious = tmp_path / "Documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="not a virtual environment"):
        ensure_venv(precious, "cpu", log=lambda _m: None)
    assert (precious / "thesis.txt").read_text() == "keep"


def test_check_fails_when_the_recorded_backend_cannot_load_its_model(setup):
    tmp, env, models = setup
    assert run_install(fast_args(tmp), env).returncode == 0
    config = Path(env["XDG_CONFIG_HOME"]) / "dfimat" / "config.json"
    conf = json.loads(config.read_text())
    conf["backend_command"] += ["--weights", str(tmp / "no-such-model.pt")]
    config.write_text(json.dumps(conf))
    bad = run_install(["--check", *fast_args(tmp)[1:]], env)
    assert bad.returncode == 1, bad.stdout
    line = row(bad.stdout, "backend reachable")
    assert "FAIL" in line and "exited with code" in line and "no-such-model.pt" in line, bad.stdout


def test_a_killed_run_leaves_the_marker_and_the_next_run_repairs(setup):
    tmp, env, models = setup
    started = tmp / "backend-probe-started"
    # A backend interpreter whose import check never ends: the run is killed in the backend step, after the
    # marker must already be there (even with --backend-python, where nothing slow would be installed).
    stuck = tmp / "stuck-python"
    stuck.write_text(f"#!/bin/sh\ntouch '{started}'\nexec sleep 120\n")
    stuck.chmod(0o755)
    args = fast_args(tmp)
    args[args.index("--backend-python") + 1] = str(stuck)
    proc = subprocess.Popen([sys.executable, str(REPO / "install.py"), *args], env=env, cwd=env["HOME"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), "install.py never reached the backend step"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (Path(env["XDG_CONFIG_HOME"]) / "dfimat" / "install-incomplete").is_file()
    check = run_install(["--check", *fast_args(tmp)[1:]], env)
    assert check.returncode == 1 and "incomplete" in row(check.stdout, "install state"), check.stdout

    again = run_install(fast_args(tmp), env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (Path(env["XDG_CONFIG_HOME"]) / "dfimat" / "install-incomplete").exists()
    check = run_install(["--check", *fast_args(tmp)[1:]], env)
    assert check.returncode == 0, check.stdout


# ---------------------------------------------------------------- backend venv commands (no pip is run)


def test_cpu_torch_keeps_a_requested_pin(monkeypatch):
    from installer import venv

    monkeypatch.delenv("DFIMAT_TORCH_SPEC", raising=False)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    monkeypatch.setattr(venv, "_cpu_index_reachable", lambda: True)
    assert venv.torch_install_args("cpu", print, requirement="torch==2.13.0") == [
        "--index-url", venv.TORCH_CPU_INDEX, "torch==2.13.0"]
    assert venv.torch_install_args("cpu", print)[-1] == f"torch{venv.TORCH_RANGE}"
    monkeypatch.setattr(venv, "_cpu_index_reachable", lambda: False)
    assert venv.torch_install_args("cpu", print, requirement="torch==2.13.0") == ["torch==2.13.0"]
    assert venv.torch_install_args("cpu", print) == [venv.TORCH_FALLBACK_SPEC]
    monkeypatch.setattr(venv, "_cpu_index_reachable", lambda: True)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline from a wheel folder: no index probe, the pin
    assert venv.torch_install_args("cpu", print, requirement="torch==2.13.0") == ["torch==2.13.0"]
    monkeypatch.setenv("DFIMAT_TORCH_SPEC", "/wheels/torch.whl")
    assert venv.torch_install_args("cpu", print, requirement="torch==2.13.0") == ["/wheels/torch.whl"]


def _fake_venv(tmp: Path, monkeypatch, installed: dict[str, str], stamp_device: str | None = None) -> list[list[str]]:
    """A venv folder whose pip commands are recorded instead of run; returns the record."""
    from installer import venv

    root = tmp / "venv"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    (root / "pyvenv.cfg").write_text("")
    if stamp_device:
        (root / venv.STAMP_NAME).write_text(json.dumps({"device": stamp_device}))
    commands: list[list[str]] = []
    monkeypatch.setattr(venv, "_run", lambda cmd, log: commands.append([str(c) for c in cmd]))
    monkeypatch.setattr(venv, "can_import", lambda python, module: True)
    monkeypatch.setattr(venv, "stage_sources", lambda dest: Path("/src/dfimat"))
    monkeypatch.setattr(venv, "installed_dists", lambda python: dict(installed))
    monkeypatch.setattr(venv, "import_check", lambda python: (True, "2.13.0 False"))
    monkeypatch.setattr(venv, "_cpu_index_reachable", lambda: False)
    monkeypatch.delenv("DFIMAT_TORCH_SPEC", raising=False)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    return commands


def _pip_tail(cmd: list[str]) -> list[str]:
    """A pip command from its subcommand on, without the options every call repeats."""
    i = cmd.index("pip")
    return [c for c in cmd[i + 1:] if c not in ("--disable-pip-version-check", "-q")]


def _pinned(*args: str) -> list[str]:
    """``pip install`` with the constraints file in front of ``args`` (the installer's order)."""
    from installer import venv

    return ["install", "-c", str(venv.CONSTRAINTS), *args]


def _mediapipe() -> list[list[str]]:
    """The last install step: mediapipe alone, where it has a wheel (issue #22)."""
    from installer import venv

    return [["install", "--no-deps", "-c", str(venv.CONSTRAINTS), venv.MEDIAPIPE_SPEC]] if sys.version_info < (3, 13) else []


def test_gpu_install_ends_with_onnxruntime_gpu_only(tmp_path, monkeypatch):
    from installer import venv

    commands = _fake_venv(tmp_path, monkeypatch, {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"})
    venv.ensure_venv(tmp_path / "venv", "cuda", log=lambda _m: None)
    assert [_pip_tail(c) for c in commands] == [
        ["install", "--upgrade", "pip"],
        _pinned("--upgrade", "/src/dfimat[gpu]"),
        *_mediapipe(),
        # Both builds own onnxruntime/: removing the CPU one deletes GPU files, hence the reinstall after it.
        ["uninstall", "-y", "onnxruntime"],
        ["install", "--force-reinstall", "--no-deps", "onnxruntime-gpu==1.22.0"],
    ]
    assert json.loads((tmp_path / "venv" / venv.STAMP_NAME).read_text())["device"] == "cuda"


def test_cpu_install_after_a_gpu_one_drops_onnxruntime_gpu(tmp_path, monkeypatch):
    from installer import venv

    commands = _fake_venv(tmp_path, monkeypatch, {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"},
                          stamp_device="cuda")
    venv.ensure_venv(tmp_path / "venv", "cpu", log=lambda _m: None)
    assert [_pip_tail(c) for c in commands] == [
        ["install", "--upgrade", "pip"],
        ["install", "--force-reinstall", "--no-deps", venv.TORCH_FALLBACK_SPEC],
        _pinned("--upgrade", "/src/dfimat"),
        *_mediapipe(),
        ["uninstall", "-y", "onnxruntime-gpu"],
        ["install", "--force-reinstall", "--no-deps", "onnxruntime==1.22.0"],
    ]


def test_plain_cpu_install_touches_no_onnxruntime(tmp_path, monkeypatch):
    from installer import venv

    commands = _fake_venv(tmp_path, monkeypatch, {"onnxruntime": "1.22.0"})
    venv.ensure_venv(tmp_path / "venv", "cpu", log=lambda _m: None)
    assert [_pip_tail(c) for c in commands] == [["install", "--upgrade", "pip"], _pinned("--upgrade", "/src/dfimat"),
                                                *_mediapipe()]
    assert venv.onnxruntime_commands(Path("py"), "cuda", {"onnxruntime-gpu": "1.22.0"}) == []


def test_no_editor_is_a_warning_with_the_next_step_not_a_failure(setup):
    """A user with no GIMP 3 or Krita yet: the install works, and --check says how to get an editor, exit 0."""
    tmp, env, models = setup
    empty = tmp / "bin"  # a PATH where no editor (native or Flatpak) can be found, whatever this machine has
    empty.mkdir()
    env = dict(env, PATH=str(empty))
    args = ["--yes", "--backend-python", sys.executable, "--models-dir", str(tmp / "models")]
    first = run_install(args, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "No editor was found" in first.stdout and "flatpak install flathub" in first.stdout, first.stdout

    check = run_install(["--check", *args[1:]], env)
    print(check.stdout)
    assert check.returncode == 0, check.stdout
    assert "FAIL" not in check.stdout
    line = row(check.stdout, "editors")
    assert " warn " in line and "neither GIMP 3 nor Krita found" in line, check.stdout
    for step in ("sudo apt-get install gimp krita", "org.gimp.GIMP org.kde.krita", "Windows", "macOS",
                 "rerun `python3 install.py`"):
        assert step in check.stdout, (step, check.stdout)


def test_check_still_fails_for_something_broken_when_no_editor_is_found(setup):
    tmp, env, models = setup
    env = dict(env, PATH=str(tmp))
    args = ["--yes", "--backend-python", sys.executable, "--models-dir", str(tmp / "models")]
    assert run_install(args, env).returncode == 0
    models.write_bytes(b"not a checkpoint")
    check = run_install(["--check", *args[1:]], env)
    assert check.returncode == 1, check.stdout
    assert " warn " in row(check.stdout, "editors") and "FAIL" in check.stdout


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_constraints_pin_every_dependency_exactly():
    """constraints.txt (tools/update_constraints.py) must name every package pyproject.toml asks for, plus
    mediapipe, with one exact version each: an unpinned one lets pip search again."""
    from installer.venv import CONSTRAINTS, MEDIAPIPE_SPEC
    from tests.test_install_venv import wheelhouse_requirements

    lines = [line.strip() for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    assert all("==" in pin and ";" not in pin for pin in pins), pins
    pinned = _names(pins)
    assert len(pinned) == len(pins), "a package is pinned twice"
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    dev = text.split("\ndev = [", 1)[1].split("]", 1)[0]
    wanted = _names(wheelhouse_requirements()[1:-1]) | _names(re.findall(r'"([^"]+)"', dev))
    wanted |= _names([MEDIAPIPE_SPEC])
    assert wanted - {"torch", "setuptools"} <= pinned, sorted(wanted - pinned)
    assert "torch" not in pinned  # its own step picks the CPU or CUDA build


def test_mediapipe_is_installed_alone_where_it_has_a_wheel():
    from installer.venv import MEDIAPIPE_SPEC, mediapipe_install_args

    args = mediapipe_install_args((3, 11))
    assert args[0] == "--no-deps" and args[-1] == MEDIAPIPE_SPEC and "-c" in args
    assert mediapipe_install_args((3, 13)) == []


def test_cv2_is_the_contrib_build_the_backend_needs():
    """backend/serving/strokes.py thins strokes with cv2.ximgproc, which only opencv-contrib-python has; it used to
    arrive as a mediapipe dependency by accident, and a plain opencv-python breaks Refine in both editors."""
    import cv2

    assert hasattr(cv2, "ximgproc"), cv2.__file__
