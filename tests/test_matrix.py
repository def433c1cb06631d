"""The server compatibility matrix: every server configuration, every way of leaving, for real.

Each column's server starts once (a module-scoped fixture) and serves every row; each cell's
result is recorded under ``$ABORT_MATRIX_DIR`` and must equal ``tests.matrix.expected``. See
``tests/matrix/__init__.py`` and ``docs/servers.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.events import Collector
from tests.matrix import records
from tests.matrix.expected import EXPECTED, measured
from tests.matrix.page import PAGE, TITLES, page_words, word
from tests.matrix.scenarios import RUN, SCENARIOS, Cell
from tests.matrix.servers import BY_NAME, COLUMNS, Column, Server

pytestmark = pytest.mark.server

#: How many gunicorn workers must have served the column's requests.
GUNICORN_WORKERS = 2


def _children(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


@pytest.fixture(scope="class")
def cell(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cell]:
    column = BY_NAME[request.param]
    directory = tmp_path_factory.mktemp(column.name)
    servers: list[Server] = []
    with closing(Collector(directory)) as events:

        def start() -> Server:
            server = Server(column, directory, events.path)
            servers.append(server)
            return server

        main = start()
        try:
            yield Cell(column, main, events, start)
            if column.name == "gunicorn-uvicorn":
                # The requests went to several worker processes, and every cell still held.
                served = events.pids() & _children(main.process.pid)
                assert len(served) >= GUNICORN_WORKERS, (served, events.pids())
        finally:
            for server in servers:
                server.stop()
    # Nothing at ERROR (or a traceback) but what the column is known to log. (The servers
    # stopped with a request in flight, graceful_shutdown's, are not judged: see there.)
    assert not column.unexpected_log(main.output()), main.output()


def check_cell(cell: Cell, scenario: str) -> None:
    observed = RUN[scenario](cell)
    name = cell.column.name
    records.append(
        name, scenario, observed.trips, observed.delay_ms, observed.note, cell.column.versions()
    )
    expected = EXPECTED[name][scenario]
    assert observed.trips == expected.trips, (observed, expected)


def _column_tests(column: Column) -> type:
    # One class per column: its server starts once (class scope) and serves every row.
    @pytest.mark.parametrize("cell", [column.name], indirect=True, scope="class")
    class ColumnTests:
        @pytest.mark.parametrize("scenario", measured(column.name))
        def test_cell_matches_the_expected_matrix(self, cell: Cell, scenario: str) -> None:
            check_cell(cell, scenario)

    ColumnTests.__name__ = ColumnTests.__qualname__ = column.class_name
    return ColumnTests


for _column in COLUMNS:
    globals()[_column.class_name] = _column_tests(_column)


def test_the_servers_page_says_what_the_expected_table_says() -> None:
    # The committed page, regenerated from a run, must not go stale when the table changes.
    words = page_words(PAGE.read_text())
    for column in COLUMNS:
        for scenario in SCENARIOS:
            expected = word(EXPECTED[column.name][scenario])
            assert words[(column.title, TITLES[scenario])] == expected, (column.name, scenario)
