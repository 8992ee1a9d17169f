"""A mock ``krita`` module and a loader for the Krita plug-in package in unit tests (no Krita needed)."""
