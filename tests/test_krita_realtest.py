"""When the real Krita 5.1 tests run, install or skip (no Krita needed: the host facts are stubbed)."""

from __future__ import annotations

import pytest

from tests.krita_harness import realtest


@pytest.fixture
def host(monkeypatch):
    """A host whose release, installed krita and tools the test sets; records apt-get runs."""
    state = {"codename": "bookworm", "krita": None, "tools": True, "apt": []}

    def apt_install():
        state["apt"].append(state["codename"])
        state["krita"], state["tools"] = "1:5.1.5+dfsg-2+deb12u1", True

    monkeypatch.setattr(realtest, "debian_codename", lambda: state["codename"])
    monkeypatch.setattr(realtest, "installed_krita", lambda: state["krita"])
    monkeypatch.setattr(realtest.shutil, "which", lambda tool: f"/usr/bin/{tool}" if state["tools"] else None)
    monkeypatch.setattr(realtest, "_apt_install_krita", apt_install)
    return state


def test_debian_12_with_krita_51_runs_without_apt(host):
    host["krita"] = "1:5.1.5+dfsg-2+deb12u1"
    assert realtest.ensure_krita_51() is None and host["apt"] == []


def test_debian_12_without_krita_installs_it(host):
    assert realtest.ensure_krita_51() is None and host["apt"] == ["bookworm"]


def test_debian_13_skips_with_the_installed_version_and_never_runs_apt(host):
    host.update(codename="trixie", krita="1:5.2.9+dfsg-1")
    reason = realtest.ensure_krita_51()
    assert reason == "Krita 5.1.5 comes from Debian 12 apt; this host (trixie) has krita 1:5.2.9+dfsg-1"
    assert host["apt"] == []


def test_other_hosts_without_krita_skip_and_never_run_apt(host):
    host.update(codename="", tools=False)
    assert "has no krita package" in realtest.ensure_krita_51() and host["apt"] == []


def test_upstream_version_strips_epoch_and_debian_revision():
    assert realtest.upstream_version("1:5.1.5+dfsg-2+deb12u1") == "5.1.5"
    assert realtest.upstream_version("5.2.9-1") == "5.2.9"
