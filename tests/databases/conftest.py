"""One PostgreSQL cluster per test session (:mod:`tests.databases.postgres`).

Locally the tests skip when PostgreSQL is missing; under ``CI=true`` they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.databases.postgres import MISSING, REQUIRED_IN_CI, Cluster, binaries, cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    bin_dir = binaries()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(REQUIRED_IN_CI.format(reason=MISSING))
        pytest.skip(MISSING)
    with cluster(bin_dir) as running:
        yield running
