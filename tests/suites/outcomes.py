"""A pytest plugin for the suites: one outcome per test id, written as JSON at the end.

Copied into each suite venv's site-packages as ``fastapi_abort_suite_outcomes.py`` and loaded
with ``-p fastapi_abort_suite_outcomes``; it writes ``$FASTAPI_ABORT_SUITE_OUTCOMES`` (nothing
without it). Under pytest-xdist only the controller writes: workers' reports reach its
``pytest_runtest_logreport`` too.

Outcomes: ``passed``, ``failed`` (the call failed, or a strict xfail passed), ``error`` (setup
or teardown failed, or the module did not collect: keyed by the collector's id), ``skipped``,
``xfailed``, ``xpassed``. The worst phase wins: a test that passed and failed its teardown is an
``error``. Each record keeps the start of its failure text.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

OUTCOMES_VARIABLE = "FASTAPI_ABORT_SUITE_OUTCOMES"
#: How much of a failure's text is kept: its start (the test) and its end (the error).
HEAD, TAIL = 1000, 3000
#: Worse outcomes replace better ones across a test's phases.
RANK = {"passed": 0, "xpassed": 1, "skipped": 2, "xfailed": 3, "failed": 4, "error": 5}

_records: dict[str, dict[str, str]] = {}


def _keep(nodeid: str, outcome: str, text: str) -> None:
    old = _records.get(nodeid)
    if old is None or RANK[outcome] > RANK[old["outcome"]]:
        if len(text) > HEAD + TAIL:
            text = f"{text[:HEAD]}\n...\n{text[-TAIL:]}"
        _records[nodeid] = {"outcome": outcome, "text": text}


def _outcome(report: pytest.TestReport) -> str:
    xfail = hasattr(report, "wasxfail")
    if report.passed:
        return "xpassed" if xfail else "passed"
    if report.skipped:
        return "xfailed" if xfail else "skipped"
    return "failed" if report.when == "call" else "error"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome = _outcome(report)
    _keep(report.nodeid, outcome, report.longreprtext if outcome in ("failed", "error") else "")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _keep(report.nodeid, "error", report.longreprtext)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(OUTCOMES_VARIABLE)
    worker: Any = getattr(session.config, "workerinput", None)
    if not path or worker is not None:
        return
    with open(path, "w", encoding="utf-8") as file:
        json.dump(_records, file, indent=0, sort_keys=True)
