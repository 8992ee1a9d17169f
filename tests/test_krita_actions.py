"""The Krita actions file: what Krita reads for the DFIMat actions' default shortcuts and Keyboard Shortcuts entry."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from installer import plugins
from tests.mock_krita import loader

extension = loader.submodule("extension")


def _actions() -> dict[str, dict[str, str]]:
    root = ET.parse(plugins.KRITA_ACTIONS).getroot()
    assert root.tag == "ActionCollection" and root.get("version") == "2"
    return {a.get("name"): {child.tag: (child.text or "") for child in a} for a in root.iter("Action")}


def test_every_action_of_the_extension_is_defined_with_its_label_and_shortcut():
    defined = _actions()
    assert set(defined) == {ident for ident, *_ in extension.ACTIONS}
    for ident, label, shortcut, _method in extension.ACTIONS:
        assert defined[ident]["text"] == label
        assert defined[ident]["shortcut"] == shortcut
    assert defined["dfimat_view_matte"]["isCheckable"] == "true"
    shortcuts = [s for s in (a["shortcut"] for a in defined.values()) if s]
    assert len(shortcuts) == len(set(shortcuts)) == 3


def test_the_installer_puts_it_in_the_resource_folders_actions(tmp_path):
    pykrita = tmp_path / "krita" / "pykrita"
    plugins.install_krita_plugin(pykrita)
    installed = tmp_path / "krita" / "actions" / "dfimat.action"
    assert plugins.krita_actions_file(pykrita) == installed
    assert installed.read_bytes() == plugins.KRITA_ACTIONS.read_bytes()
    assert plugins.plugin_drift("krita", pykrita / "dfimat") == []
    installed.unlink()
    assert plugins.plugin_drift("krita", pykrita / "dfimat") == [f"{installed} missing"]
    # A rerun puts it back and reports it as changed.
    _, changed = plugins.deploy_krita_plugin(pykrita)
    assert changed == [installed]
