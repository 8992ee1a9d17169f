"""Import krita_plugin/dfimat under its own name with the mock ``krita`` module in place.

The package is loaded as ``dfimat_krita`` so it can never clash with the GIMP plug-in's ``dfimat`` package in the same
pytest process; its relative imports work under any name.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE.parent.parent / "krita_plugin" / "dfimat"
NAME = "dfimat_krita"


def load_plugin():
    """The plug-in package (registration disabled), with ``krita`` resolving to the mock."""
    os.environ["DFIMAT_NO_REGISTER"] = "1"
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    if NAME in sys.modules:
        return sys.modules[NAME]
    spec = importlib.util.spec_from_file_location(NAME, PLUGIN / "__init__.py",
                                                  submodule_search_locations=[str(PLUGIN)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    spec.loader.exec_module(module)
    return module


def submodule(name: str):
    load_plugin()
    return importlib.import_module(f"{NAME}.{name}")
