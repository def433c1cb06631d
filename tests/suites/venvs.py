"""Each suite's sources and its own venv, made on first use under ``build/suites/``.

A suite is FastAPI's or Starlette's test suite at the version installed where this runs (the
project's ``.venv``, or ``.venv-oldest`` in CI's second pass). Its sdist is fetched with
``pip download --no-binary :all:`` into ``build/suites/sdists/`` and extracted into
``build/suites/src/<project>-<version>/`` without the package directory itself, so the tests
import the installed release, the same one as here. Its venv, ``build/suites/venv-<project>-
<version>/``, holds the suite's own test requirements (its pyproject dependency group, or its
``requirements*.txt`` for older releases), this project installed editable without extras, the
exact fastapi, starlette and anyio of the running venv (a constraint that overrides the
suite's own pins of those three, which old requirement files set below what this project
needs), pytest-timeout, and the hook (:mod:`tests.suites.hook`) with its ``.pth`` and the
outcome plugin (:mod:`tests.suites.outcomes`).

The venv is made again when what it was made from changes (a stamp file holds it); the hook and
the plugin are copied in before every run, so an edit to them needs no new venv.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests import ROOT

BUILD = ROOT / "build" / "suites"
HERE = Path(__file__).resolve().parent
#: What the running venv pins in each suite venv.
PINNED = ("fastapi", "starlette", "anyio")
HOOK_MODULE = "fastapi_abort_suite_hook"
OUTCOMES_MODULE = "fastapi_abort_suite_outcomes"
STAMP = "fastapi-abort-suite.json"
#: For a release whose tests come with a requirements file, which pins few versions: upper
#: bounds on what newer releases of its unpinned requirements broke in its suite as shipped.
#: (pip's ``--uploaded-prior-to`` would say it in one date, but only for indexes that publish
#: upload times, and a local index or wheel directory does not.)
ERA_REQUIREMENTS = {
    # 0.0.13 warns (PendingDeprecationWarning) on ``import multipart``, which Starlette before
    # 0.40 does; under the suite's ``filterwarnings = error`` its conftest does not import.
    # httpx 0.28 sends JSON without spaces, which 6 of its tests compare byte for byte.
    "starlette-0.38.6": ["python-multipart<0.0.13", "httpx<0.28"],
    # The same python-multipart; bcrypt 4.1 and later break passlib 1.7 (bcrypt 5 raises on a
    # long test password); pydantic 2.10 and later change schemas its tests compare.
    "fastapi-0.115.0": ["python-multipart<0.0.13", "bcrypt<4.1", "pydantic<2.10"],
}
#: Warning filters for a suite run, on top of the suite's own, for a release run on the oldest
#: anyio this project supports when its own requirements kept anyio below 4.
ERA_WARNINGS = {
    # Starlette 0.38.6 with anyio 4.4 and later leaves memory streams unclosed for the garbage
    # collector, which warns in whichever test is running then (so which tests fail moves with
    # the collector's timing); Starlette 0.38.6's own pyproject ignores exactly this warning,
    # FastAPI 0.115.0's (made for anyio 3) does not. pytest takes the message of -W literally,
    # as a prefix: no regular expression.
    "fastapi-0.115.0": [
        "ignore:Unclosed <MemoryObjectReceiveStream:ResourceWarning",
        "ignore:Unclosed <MemoryObjectSendStream:ResourceWarning",
    ],
}
NO_TESTS = "the {project} {version} sdist ships no tests/ directory: {path}"
NO_REQUIREMENTS = (
    "the {project} {version} sdist has neither a [dependency-groups] {group!r} group in its "
    "pyproject.toml nor {file}: which test requirements to install is unknown"
)
STEP_FAILED = "{step} failed with exit code {code}:\n{output}"


@dataclass(frozen=True)
class Suite:
    """One project's test suite and how its tests are installed."""

    #: The distribution, and the name of its package directory.
    project: str
    #: The pyproject dependency group of the tests (newer releases).
    group: str
    #: The requirements file of the tests (older releases), ``-e .[x]`` and ``-r`` lines in it.
    requirements: str
    #: The extra the suite's tests need of the project itself.
    extra: str

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.project)

    @property
    def name(self) -> str:
        return f"{self.project}-{self.version}"

    @property
    def source(self) -> Path:
        return BUILD / "src" / self.name

    @property
    def venv(self) -> Path:
        return BUILD / f"venv-{self.name}"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


FASTAPI = Suite("fastapi", group="tests", requirements="requirements-tests.txt", extra="all")
STARLETTE = Suite("starlette", group="dev", requirements="requirements.txt", extra="full")
SUITES = {suite.project: suite for suite in (FASTAPI, STARLETTE)}


def _run(step: str, command: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(STEP_FAILED.format(step=step, code=done.returncode, output=done.stdout))


def fetch_source(suite: Suite) -> Path:
    """The suite's extracted sdist, downloaded and extracted if not there yet."""
    if (suite.source / "tests").is_dir():
        return suite.source
    sdists = BUILD / "sdists"
    archive = sdists / f"{suite.name}.tar.gz"
    if not archive.exists():
        sdists.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        requirement = f"{suite.project}=={suite.version}"
        _run("pip download", [*pip, "--no-binary", ":all:", "-d", str(sdists), requirement])
    with tempfile.TemporaryDirectory(dir=BUILD) as scratch, tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(scratch, filter="data")
        else:  # Python before 3.10.12 and 3.11.4: no filters; PyPI's sdist of a pinned release
            tar.extractall(scratch)
        extracted = Path(scratch) / suite.name
        if not (extracted / "tests").is_dir():
            raise RuntimeError(
                NO_TESTS.format(project=suite.project, version=suite.version, path=extracted)
            )
        # The installed release is the one under test, not this copy of its sources.
        shutil.rmtree(extracted / suite.project)
        suite.source.parent.mkdir(parents=True, exist_ok=True)
        extracted.rename(suite.source)
    return suite.source


def _requirement_lines(path: Path) -> list[str]:
    """A requirements file's requirements: ``-r`` followed, ``-e .[x]`` as the project."""
    lines: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            lines += _requirement_lines(path.parent / line[3:].strip())
        elif line.startswith("-e "):
            continue  # ``-e .[all]``: the project and its extra are added by the caller
        else:
            lines.append(line)
    return lines


def _unpinned(line: str) -> str:
    """A requirement of one of PINNED without its versions: the constraint decides them."""
    from packaging.requirements import Requirement

    requirement = Requirement(line)
    if requirement.name.lower() not in PINNED:
        return line
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return requirement.name + extras


def suite_requirements(suite: Suite, source: Path) -> list[str]:
    """pip arguments for the suite's own test requirements."""
    pyproject = source / "pyproject.toml"
    if "\n[dependency-groups]" in pyproject.read_text():
        return ["--group", f"{pyproject}:{suite.group}"]
    path = source / suite.requirements
    if not path.exists():
        raise RuntimeError(
            NO_REQUIREMENTS.format(
                project=suite.project, version=suite.version, group=suite.group, file=path.name
            )
        )
    requirements = [_unpinned(line) for line in _requirement_lines(path)]
    return requirements + ERA_REQUIREMENTS.get(suite.name, [])


def _site_packages(venv: Path) -> Path:
    paths = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
    return Path(paths["purelib"])


def copy_hook(suite: Suite) -> None:
    """The hook, its ``.pth`` and the outcome plugin, into the suite venv (every run)."""
    site = _site_packages(suite.venv)
    shutil.copyfile(HERE / "hook.py", site / f"{HOOK_MODULE}.py")
    shutil.copyfile(HERE / "outcomes.py", site / f"{OUTCOMES_MODULE}.py")
    (site / f"{HOOK_MODULE}.pth").write_text(f"import {HOOK_MODULE}\n")


def prepare(suite: Suite) -> Suite:
    """Make sure the suite's sources and venv exist and match the running venv's versions."""
    source = fetch_source(suite)
    pins = {name: importlib.metadata.version(name) for name in PINNED}
    requirements = suite_requirements(suite, source)
    wanted = {"python": sys.version, "pins": pins, "requirements": requirements}
    stamp = suite.venv / STAMP
    if not stamp.exists() or json.loads(stamp.read_text()) != wanted:
        if suite.venv.exists():
            shutil.rmtree(suite.venv)
        _run("python -m venv", [sys.executable, "-m", "venv", "--without-pip", str(suite.venv)])
        with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=BUILD) as constraints:
            constraints.write("".join(f"{name}=={version}\n" for name, version in pins.items()))
            constraints.flush()
            pip = [sys.executable, "-m", "pip", "--python", str(suite.python), "install"]
            project = f"{suite.project}[{suite.extra}]"
            _run(
                f"pip install of the {suite.name} suite's requirements",
                [
                    *pip,
                    "--quiet",
                    "-c",
                    constraints.name,
                    "-e",
                    str(ROOT),
                    project,
                    "pytest-timeout",
                    *requirements,
                ],
                cwd=source,
            )
        stamp.write_text(json.dumps(wanted))
    copy_hook(suite)
    return suite
