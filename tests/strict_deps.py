"""Under CI, a test skipped because a package is missing is a failure.

``pytest.importorskip`` is right on a developer's machine without an extra installed, but in CI every extra the
suite exercises is installed (``.ci/run``), so a missing one means a parity test silently stopped testing. The
only exception is a dependency CI is allowed to lack: llama.cpp's binding, which compiles at install time and whose
install ``.ci/run`` lets fail.
"""

from __future__ import annotations

import os
import re

import pytest

OPTIONAL_UNDER_CI = frozenset({"llama_cpp"})
_MISSING = re.compile(r"could not import '([\w.]+)'")


def strict() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _fail_if_missing_dependency(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not (report.skipped and strict()):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    match = _MISSING.search(reason)
    if match and match.group(1).split(".")[0] not in OPTIONAL_UNDER_CI:
        report.outcome = "failed"
        report.longrepr = f"{reason}\n(CI=true: a missing test dependency is a failure; install the test extra)"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_if_missing_dependency(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_missing_dependency(outcome.get_result())
