"""One PostgreSQL cluster per test session (:mod:`tests.databases.postgres`).

Locally the tests skip when PostgreSQL is missing; under ``CI=true`` they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.databases.postgres import MISSING, Cluster, binaries, cluster
from tests.support import missing


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    bin_dir = binaries()
    if bin_dir is None:
        missing(MISSING, "the database tests")
    with cluster(bin_dir) as running:
        yield running
