"""Shared test configuration: component markers skip with a reason locally and fail in CI."""

from __future__ import annotations

import os

import pytest

# .ci/run sets REPVGG_REQUIRE_ALL=1: there a skipped test means a component CI should have started is missing.
REQUIRE_ALL = os.environ.get("REPVGG_REQUIRE_ALL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a component a test needs is not available."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required component missing (REPVGG_REQUIRE_ALL=1): {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, turn any skip (a test's own or pytest.importorskip) into a failure."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every component must be present: {report.longrepr}"
