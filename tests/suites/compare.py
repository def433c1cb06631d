"""Run a suite as shipped and patched, at the same time, and compare the outcomes per test id.

Each run is ``python -m pytest tests`` in its own copy of the suite's extracted sdist, with its
venv's interpreter, a clean environment (none of this process's coverage, pytest or venv
variables), the outcome plugin, and pytest-timeout's ``--timeout`` as a bound for a test that
hangs. The shipped run has no ``FASTAPI_ABORT_SUITE``; the patched run has it set to a mode of
the hook (:mod:`tests.suites.hook`). Both run at once, one process each, on the machine's two cores.

A *difference* is a test whose outcome as shipped was ``passed`` or ``xfailed`` and is anything
else patched (a failure, an error, a skip, a test that is no longer collected). A test that
already failed or skipped as shipped is not one: the plugin cannot be blamed for it. The only
accepted differences are in :data:`EXPECTED`, each with its reason, and only for a test that
inspects internals a middleware necessarily changes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.suites.hook import APPS_VARIABLE, CONSTRUCT, MODE_VARIABLE
from tests.suites.outcomes import OUTCOMES_VARIABLE
from tests.suites.venvs import BUILD, ERA_WARNINGS, OUTCOMES_MODULE, Suite

SHIPPED = "shipped"
#: ``"<project>:<test id>"`` to the reason the test cannot pass with any middleware installed.
#: Empty: every test of both suites must behave the same with install() as without.
EXPECTED: dict[str, str] = {}
#: The bound on one suite test (pytest-timeout), generous for two runs sharing two cores.
TEST_TIMEOUT = 120
#: The bound on a whole run, after which it is killed and the comparison fails.
RUN_TIMEOUT = 1500
#: What makes a test's outcome one the patched run must keep.
KEPT = ("passed", "xfailed")
#: Environment variables of this process a suite run must not inherit.
DROPPED_PREFIXES = ("COV_", "COVERAGE", "PYTEST_", "PYTHON", "VIRTUAL_ENV", MODE_VARIABLE)
RUN_DIED = "the {mode} run of {suite} {reason}; the end of its output ({log}):\n{tail}"
#: How many lines of a failure the report shows.
FAILURE_LINES = 8


@dataclass(frozen=True)
class Run:
    """One run of a suite: its outcomes, the apps the hook patched, how long it took."""

    mode: str
    outcomes: dict[str, dict[str, str]]
    #: The hook's lines (``<mode> <what> <class>``), counted.
    apps: Counter[str]
    seconds: float
    log: Path

    @property
    def installed(self) -> int:
        return sum(n for line, n in self.apps.items() if line.split()[1] == "installed")

    def counts(self) -> Counter[str]:
        return Counter(record["outcome"] for record in self.outcomes.values())


@dataclass(frozen=True)
class Difference:
    """A test that passed (or xfailed) as shipped and did not with the plugin."""

    test: str
    shipped: str
    patched: str
    text: str

    def first_lines(self) -> str:
        """The ``E`` lines of the failure if it has any, else its first lines."""
        lines = self.text.splitlines()
        errors = [line for line in lines if line.startswith("E ")]
        return "\n".join((errors or lines)[:FAILURE_LINES])


@dataclass(frozen=True)
class Comparison:
    suite: Suite
    shipped: Run
    patched: Run
    differences: list[Difference] = field(default_factory=list)
    expected: list[Difference] = field(default_factory=list)


def environment(suite: Suite, mode: str, directory: Path) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(DROPPED_PREFIXES)
    }
    environment["VIRTUAL_ENV"] = str(suite.venv)
    environment["PATH"] = f"{suite.venv / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    environment[OUTCOMES_VARIABLE] = str(directory / "outcomes.json")
    environment[APPS_VARIABLE] = str(directory / "apps")
    if mode != SHIPPED:
        environment[MODE_VARIABLE] = mode
    return environment


def _start(suite: Suite, mode: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    directory = BUILD / "runs" / suite.name / mode
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "apps").mkdir(parents=True)
    # A copy each: the suites write and delete files in their working directory (FastAPI's
    # ./static of the docs examples), which two runs in one tree race for.
    source = shutil.copytree(suite.source, directory / "src", symlinks=True)
    log = directory / "log.txt"
    command = [str(suite.python), "-m", "pytest", "-p", OUTCOMES_MODULE, "-p", "no:cacheprovider"]
    command += ["-p", "no:sugar", f"--timeout={TEST_TIMEOUT}", "-q", "--durations=10"]
    command += [f"-W{warning}" for warning in ERA_WARNINGS.get(suite.name, [])]
    command += [*extra, "tests"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=source,
            env=environment(suite, mode, directory),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its servers and workers are killed with it on a timeout
        )
    return process, directory


def _finish(
    suite: Suite, mode: str, process: subprocess.Popen[bytes], directory: Path, started: float
) -> Run:
    log = directory / "log.txt"
    try:
        process.wait(timeout=max(1.0, RUN_TIMEOUT - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise RuntimeError(_died(suite, mode, f"did not end within {RUN_TIMEOUT} s", log)) from None
    seconds = time.monotonic() - started
    # pytest's exit code: 0 all passed, 1 some failed; anything else is no result.
    outcomes_path = directory / "outcomes.json"
    if process.returncode not in (0, 1) or not outcomes_path.exists():
        reason = f"ended with exit code {process.returncode} and no outcomes"
        raise RuntimeError(_died(suite, mode, reason, log))
    apps: Counter[str] = Counter()
    for path in (directory / "apps").iterdir():
        apps.update(line for line in path.read_text().splitlines() if line)
    return Run(mode, json.loads(outcomes_path.read_text()), apps, seconds, log)


def _died(suite: Suite, mode: str, reason: str, log: Path) -> str:
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    return RUN_DIED.format(mode=mode, suite=suite.name, reason=reason, log=log, tail=tail)


def run_both(suite: Suite, mode: str = CONSTRUCT, extra: list[str] | None = None) -> Comparison:
    """The suite as shipped and patched in ``mode``, at once; compared."""
    started = time.monotonic()
    shipped = _start(suite, SHIPPED, extra or [])
    patched = _start(suite, mode, extra or [])
    try:
        shipped_run = _finish(suite, SHIPPED, *shipped, started)
        patched_run = _finish(suite, mode, *patched, started)
    finally:
        for process, _ in (shipped, patched):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return compare(suite, shipped_run, patched_run)


def compare(suite: Suite, shipped: Run, patched: Run) -> Comparison:
    differences: list[Difference] = []
    expected: list[Difference] = []
    for test, record in sorted(shipped.outcomes.items()):
        if record["outcome"] not in KEPT:
            continue
        after = patched.outcomes.get(test, {"outcome": "missing", "text": ""})
        if after["outcome"] == record["outcome"]:
            continue
        difference = Difference(test, record["outcome"], after["outcome"], after["text"])
        key = f"{suite.project}:{test}"
        (expected if key in EXPECTED else differences).append(difference)
    return Comparison(suite, shipped, patched, differences, expected)


def summary(comparison: Comparison) -> str:
    """What a run found, for the test's failure message, the report and the CLI."""
    shipped, patched = comparison.shipped, comparison.patched
    lines = [
        f"{comparison.suite.name}: {len(shipped.outcomes)} test ids as shipped, "
        f"{len(patched.outcomes)} {patched.mode}",
        f"  shipped: {dict(sorted(shipped.counts().items()))} in {shipped.seconds:.0f} s",
        f"  {patched.mode}: {dict(sorted(patched.counts().items()))} in {patched.seconds:.0f} s",
        f"  apps patched: {dict(sorted(patched.apps.items()))}",
        f"  differences: {len(comparison.differences)}, "
        f"expected differences: {len(comparison.expected)}",
    ]
    for difference in comparison.differences:
        lines.append(f"- {difference.test}: {difference.shipped} -> {difference.patched}")
        lines += [f"    {line}" for line in difference.first_lines().splitlines()]
    return "\n".join(lines)
