"""The SQLite recipe's two ways (docs/examples/recipe_sqlite.py) under a real uvicorn: the
statement stops when the client leaves, even a client that leaves before it started, and the
request ends as the quiet 499."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.raw_http import leave, request_bytes
from tests.serve import assert_one_quiet_line, running

pytestmark = pytest.mark.server
BOUND = 15.0
APP = "tests.databases.db_app:app"
#: Rows of the recipe's table: its self-join then runs far longer than any bound here.
ROWS = 20_000


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "shop.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sales (amount INTEGER)")
        db.executemany("INSERT INTO sales VALUES (?)", ((n % 997,) for n in range(ROWS)))
    db.close()
    return path


def reading(database: Path) -> bool:
    """Whether a statement is reading the database: it holds a SHARED lock, so an exclusive
    transaction cannot start."""
    probe = sqlite3.connect(database, timeout=0)
    try:
        probe.execute("BEGIN EXCLUSIVE")
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()
    return False


@pytest.mark.parametrize("path", ["/pairs", "/pairs/interrupted"])
@pytest.mark.parametrize("when", ["at_arrival", "mid_query"])
def test_the_statement_stops_and_the_request_ends_quietly(
    path: str, when: str, database: Path, tmp_path: Path
) -> None:
    env = {"EXAMPLE": "recipe_sqlite", "SQLITE_DATABASE": str(database)}
    key = path.rsplit("/", 1)[-1]  # what the app's records go by: the path's last segment
    with running("uvicorn-h11", tmp_path / "server.log", APP, env=env) as served:
        sock = served.connect(timeout=BOUND)
        sock.sendall(request_bytes(path))
        assert served.wait_for(key, "started", timeout=BOUND)["happened"]
        if when == "mid_query":
            deadline = time.monotonic() + BOUND
            while not reading(database):
                assert time.monotonic() < deadline, "the query never started"
        leave(sock)
        result = served.wait_for(key, "logged", timeout=BOUND)
        assert result["happened"], result
        assert not reading(database)
        assert_one_quiet_line(served, path, result)
        assert served.noisy() == []
