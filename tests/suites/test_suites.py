"""FastAPI's and Starlette's own test suites pass the same with ``install()`` on every app.

For each suite, at the installed release: run it as shipped and again with the hook's
``install(self)`` right after every ``FastAPI(...)``/``Starlette(...)`` is constructed, at once,
and compare the outcomes per test id (:mod:`tests.suites.compare`). The sources and the suite's
venv are made on first use (:mod:`tests.suites.venvs`); ``python -m tests.suites`` runs the
same from the command line, with a ``late`` mode too.

The test fails on any difference not in :data:`~tests.suites.compare.EXPECTED`, listing each
differing test id and the first lines of its failure; if the hook patched implausibly few apps
(it did not reach the suite), patched any in the shipped run, or an expected difference no
longer differs. It never skips: what it needs (``python3 -m venv`` and PyPI) is what
``.ci/run`` needs too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.suites.compare import EXPECTED, RUN_TIMEOUT, SHIPPED, environment, run_both, summary
from tests.suites.hook import CONSTRUCT, LATE
from tests.suites.venvs import BUILD, FASTAPI, SUITES, prepare

#: Fewer apps patched than this share of the test ids means the hook did not reach the suite.
#: Measured: one app per 2.3 tests (FastAPI 0.165.0: 2,299 apps, 5,221 tests), 4.5 (FastAPI
#: 0.115.0: 539, 2,430), 3.5 (Starlette 1.10.0: 410, 1,416), 3.9 (Starlette 0.38.6: 209, 812).
MINIMUM_APPS_PER_TEST = 0.1
#: Making a venv on a clean machine, then the two runs.
SETUP_SECONDS = 600
DIFFERENT = "{count} tests of {suite} passed as shipped and not with install():\n{report}"
TOO_FEW_APPS = (
    "the hook installed fastapi-abort on {count} apps of {suite}, fewer than {minimum}: it did "
    "not reach the suite's apps, so the comparison shows nothing.\n{report}"
)
PATCHED_SHIPPED = "the shipped run of {suite} patched apps, so it was not as shipped:\n{report}"
#: Run by the suite venv's interpreter: three apps, whether each is installed once built, and
#: once it has been called (its lifespan through the TestClient).
PROBE = """
import json
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.testclient import TestClient
from fastapi_abort import OperationCancelled

class Sub(FastAPI):
    pass

apps = [FastAPI(), Starlette(), Sub()]
built = [OperationCancelled in app.exception_handlers for app in apps]
for app in apps:
    with TestClient(app):
        pass
called = [OperationCancelled in app.exception_handlers for app in apps]
print(json.dumps([built, called]))
"""
#: What the probe prints in each mode, and the hook's lines for it.
PROBED = {
    SHIPPED: ([[False] * 3, [False] * 3], []),
    CONSTRUCT: ([[True] * 3, [True] * 3], [CONSTRUCT] * 3),
    LATE: ([[False] * 3, [True] * 3], [LATE] * 3),
}
STALE_EXPECTED = "expected differences of {suite} that no longer differ; remove them: {tests}"


@pytest.mark.timeout(SETUP_SECONDS)
@pytest.mark.parametrize("mode", sorted(PROBED))
def test_the_hook_reaches_every_process_of_the_venv(mode: str, tmp_path: Path) -> None:
    """A new interpreter of the suite venv (as a subprocess of a suite test is) gets the hook
    from its ``.pth`` when the variable says so, and nothing without it."""
    suite = prepare(FASTAPI)
    (tmp_path / "apps").mkdir()
    done = subprocess.run(
        [str(suite.python), "-c", PROBE],
        env=environment(suite, mode, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed, modes = PROBED[mode]
    assert json.loads(done.stdout) == printed
    lines = [
        line for path in (tmp_path / "apps").iterdir() for line in path.read_text().splitlines()
    ]
    assert [line.split()[:2] for line in lines] == [[m, "installed"] for m in modes]


@pytest.mark.timeout(SETUP_SECONDS + RUN_TIMEOUT)
@pytest.mark.parametrize("project", sorted(SUITES))
def test_the_suite_passes_the_same_with_install(project: str) -> None:
    suite = prepare(SUITES[project])
    comparison = run_both(suite)
    report = summary(comparison)
    (BUILD / "runs" / suite.name / "summary.txt").write_text(report + "\n")
    assert not comparison.shipped.apps, PATCHED_SHIPPED.format(suite=suite.name, report=report)
    minimum = int(MINIMUM_APPS_PER_TEST * len(comparison.shipped.outcomes))
    installed = comparison.patched.installed
    assert installed >= minimum, TOO_FEW_APPS.format(
        count=installed, suite=suite.name, minimum=minimum, report=report
    )
    still = {f"{project}:{difference.test}" for difference in comparison.expected}
    stale = sorted(key for key in EXPECTED if key.startswith(f"{project}:") and key not in still)
    assert not stale, STALE_EXPECTED.format(suite=suite.name, tests=stale)
    if comparison.differences:
        # The report alone: pytest's rendering of the comparison would bury it.
        count = len(comparison.differences)
        pytest.fail(DIFFERENT.format(count=count, suite=suite.name, report=report), pytrace=False)
