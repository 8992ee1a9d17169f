#!/usr/bin/env python3
"""One-command installer for DFIMat for GIMP and Krita (stdlib only, Python >= 3.10).

Run ``python install.py --help``; docs/install.md describes every step. Importable: tests and the editor test
harnesses use ``install_gimp_plugin`` / ``install_krita_plugin``.
"""

# Kept free of annotations and f-strings so that an old Python reaches the version message below instead of
# failing with a SyntaxError.
import os
import sys

if sys.version_info < (3, 10):  # noqa: UP036 - the point is a clear message on an old Python
    sys.exit("install.py needs Python >= 3.10, this is %s" % sys.version.split()[0])  # noqa: UP031

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from installer.cli import main  # noqa: E402
from installer.plugins import install_gimp_plugin, install_krita_plugin  # noqa: E402

__all__ = ["install_gimp_plugin", "install_krita_plugin", "main"]

if __name__ == "__main__":
    sys.exit(main())
