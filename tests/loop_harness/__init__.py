"""Helpers for the real-editor refinement-loop tests (tests/test_gimp_loop.py, tests/test_krita_loop.py)."""
