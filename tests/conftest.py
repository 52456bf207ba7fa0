"""Shared test configuration: component-marked tests skip with a reason locally and fail in CI."""

from __future__ import annotations

import pytest
from support import REQUIRE_ALL


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With REPVGG_REQUIRE_ALL=1 (CI), any skip (a test's own or pytest.importorskip) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every component must be present: {report.longrepr}"
