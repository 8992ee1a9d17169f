"""Suite-wide rules. Under CI=true a real-editor test (marker ``gimp`` or ``krita``) that skips is reported as a
failure: CI must run the real editors (tests/editors/sandbox.py builds their roots there), and a skip would let a
broken root or a missing tool pass unnoticed. Outside CI such a skip stays a skip with its reason."""

from __future__ import annotations

import pytest

from tests.editors.sandbox import in_ci

EDITOR_MARKERS = ("gimp", "krita")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci() and not hasattr(report, "wasxfail")):
        return
    if any(item.get_closest_marker(m) for m in EDITOR_MARKERS):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a real-editor test must run, not skip ({reason})"
