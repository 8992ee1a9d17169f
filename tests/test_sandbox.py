"""When the real-editor tests may build a root, install the sandbox tools, skip or fail (host facts stubbed: no
root is built and nothing is installed here)."""

from __future__ import annotations

import pytest

from tests.editors import debian13, sandbox


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A Linux host whose tools, user, CI flag and release the test sets; records host apt-get runs."""
    state = {"tools": set(), "uid": 0, "apt": [], "codename": "bookworm"}
    monkeypatch.setenv("DFIMAT_TEST_ROOTS", str(tmp_path / "roots"))
    for root in sandbox.ROOTS:
        monkeypatch.delenv(root.env_var, raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sandbox.sys, "platform", "linux")
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: state["uid"])
    monkeypatch.setattr(sandbox, "host_codename", lambda: state["codename"])
    known = {"apt-get"}
    monkeypatch.setattr(sandbox.shutil, "which",
                        lambda tool: f"/usr/bin/{tool}" if tool in state["tools"] | known else None)
    monkeypatch.setattr(sandbox, "install_host_tools", lambda: state["apt"].append("host tools"))
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: None)
    return state


@pytest.mark.parametrize("root", sandbox.ROOTS, ids=lambda r: r.codename)
def test_without_the_sandbox_tools_outside_ci_it_names_the_apt_command(host, root):
    reason = root.skip_reason()
    assert reason is not None and sandbox.APT_COMMAND in reason and "debootstrap, bubblewrap" in reason
    assert root.label in reason
    with pytest.raises(RuntimeError, match="apt-get install"):
        root.ensure_root()
    assert host["apt"] == []


def test_as_a_normal_user_outside_ci_it_skips_too(host):
    host["uid"] = 1000
    assert sandbox.APT_COMMAND in sandbox.TRIXIE.skip_reason()


def test_under_ci_as_root_the_tools_may_be_installed(host, monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert sandbox.TRIXIE.skip_reason() is None


def test_under_ci_a_normal_user_cannot_install_them(host, monkeypatch):
    monkeypatch.setenv("CI", "true")
    host["uid"] = 1000
    assert sandbox.APT_COMMAND in sandbox.BOOKWORM.skip_reason()


def test_with_the_tools_a_built_root_is_used_by_anyone(host, tmp_path):
    host.update(tools={"debootstrap", "bwrap"}, uid=1000)
    root = sandbox.BOOKWORM.root_path()
    assert root == tmp_path / "roots" / "bookworm"
    assert "needs root" in sandbox.BOOKWORM.skip_reason()
    root.mkdir(parents=True)
    (root / ".dfimat-ready").write_text(" ".join(sandbox.BOOKWORM.packages) + " extra-package\n")
    assert sandbox.BOOKWORM.skip_reason() is None
    assert sandbox.BOOKWORM.ensure_root() == root and host["apt"] == []


def test_a_root_missing_one_package_of_the_list_is_not_ready(host):
    root = sandbox.TRIXIE.root_path()
    root.mkdir(parents=True)
    (root / ".dfimat-ready").write_text(" ".join(sandbox.TRIXIE.packages[1:]) + "\n")
    assert not sandbox.TRIXIE.ready()


def test_a_matching_host_with_the_editors_needs_no_root(host):
    host.update(codename="trixie", tools={"gimp-console-3.0", "krita", "xvfb-run"})
    assert sandbox.TRIXIE.skip_reason() is None and sandbox.TRIXIE.ensure_root().as_posix() == "/"
    # Debian 13's Krita is 5.2: the Krita 5.1 root is still needed, and here the tools to build it are missing.
    assert sandbox.APT_COMMAND in sandbox.BOOKWORM.skip_reason()


def test_require_skips_outside_ci_and_fails_under_ci(host, monkeypatch):
    with pytest.raises(pytest.skip.Exception):
        sandbox.require(sandbox.TRIXIE)
    monkeypatch.setenv("CI", "true")
    host["uid"] = 1000
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        sandbox.require(sandbox.TRIXIE)


def test_the_old_debian13_names_still_work(host, tmp_path):
    assert debian13.root_path() == sandbox.TRIXIE.root_path() == tmp_path / "roots" / "trixie"
    assert debian13.skip_reason() == sandbox.TRIXIE.skip_reason()
    assert debian13.PACKAGES == sandbox.TRIXIE.packages and "gimp" in debian13.PACKAGES


def test_per_root_variable_points_elsewhere(host, monkeypatch, tmp_path):
    monkeypatch.setenv("DFIMAT_BOOKWORM_ROOT", str(tmp_path / "mine"))
    assert sandbox.BOOKWORM.root_path() == tmp_path / "mine"
    assert sandbox.TRIXIE.root_path() == tmp_path / "roots" / "trixie"
