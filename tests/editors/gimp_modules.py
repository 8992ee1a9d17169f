"""Import the GIMP plug-in's pure-Python modules in tests, without GIMP."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "gimp_plugin" / "dfimat"


def load(name: str) -> ModuleType:
    """Load ``gimp_plugin/dfimat/<name>.py`` by file.

    The folder is never put on sys.path: its dfimat.py would shadow the Krita plug-in's ``dfimat`` package for
    every later test in the same pytest process.
    """
    module_name = f"gimp_dfimat_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, PLUGIN_DIR / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {PLUGIN_DIR / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module
