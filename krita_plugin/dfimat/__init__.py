"""DFIMat for Krita: select one person with Krita's own tools as prompts (local DFIMat-S backend).

Registers the extension (Tools > Scripts actions) and the DFIMat docker. The vendored ``dfimat_client`` (and pyzmq
where Krita's Python lacks it) sit in ``vendor/`` next to this file.
"""

from __future__ import annotations

import os
import sys

_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)


def _register() -> None:
    from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita

    from .controller import Controller
    from .docker import DFIMatDocker
    from .extension import DFIMatExtension

    app = Krita.instance()
    controller = Controller()
    DFIMatDocker.controller = controller
    app.addExtension(DFIMatExtension(app, controller))
    app.addDockWidgetFactory(DockWidgetFactory("dfimat_docker", DockWidgetFactoryBase.DockRight, DFIMatDocker))


# Krita imports this package to load the plug-in; kritarunner scripts and unit tests import submodules only
# (DFIMAT_NO_REGISTER=1) and drive the controller / document functions directly.
if os.environ.get("DFIMAT_NO_REGISTER") != "1":
    try:
        import krita  # noqa: F401
    except ImportError:
        pass
    else:
        _register()
