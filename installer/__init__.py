"""Stdlib-only helpers behind ``python install.py`` (venv, models, editors, diagnosis).

Nothing here may import a third-party package: the installer runs on the user's bare Python >= 3.10.
"""
