"""The demo's commission report on PostgreSQL: ``python -m demo_app --database URL``.

The demo runs as the README says, on real uvicorn, against the session's throwaway cluster (a
database of its own, so that the other database tests never see its connections). It must give
the same figures as the SQLite demo, and a client that leaves mid-report must stop the statement
on the server: ``pg_stat_activity`` is read from a connection of the test's own, and the server's
log says why the statement ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from demo_app.report_postgres import SCHEMA
from tests.databases.postgres import Cluster
from tests.support import Demo, requesting, running_demo

pytestmark = pytest.mark.server

DATABASE = "demo"
WATCHER = "fastapi-abort-demo-watcher"
BOUND = 15.0  # seconds any wait for the server may take before the test fails
CANCELLED = "canceling statement due to user request"
PAIRS = "JOIN sales AS b"  # a piece of the long statement's text, as pg_stat_activity shows it
SALES = "FROM sales WHERE employee_id"  # the report's statement, once per employee


@pytest.fixture(scope="module")
def dsn(postgres: Cluster) -> str:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return postgres.dsn.rsplit("/", 1)[0] + "/" + DATABASE


@pytest.fixture(scope="module")
def demo(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo-pg") / "unused.sqlite3", dsn) as server:
        yield server


@pytest.fixture
def watcher(dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(dsn, autocommit=True, application_name=WATCHER) as conn:
        conn.execute("SET log_statement = 'none'")  # it polls without pause: out of the log
        yield conn


def statements(
    conn: psycopg.Connection[tuple[Any, ...]], text: str, for_at_least: float = 0.0
) -> list[int]:
    """The pids of the demo's client backends running a statement that holds ``text``, and has
    run for ``for_at_least`` seconds."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name <> %s"
        " AND backend_type = 'client backend' AND state = 'active' AND strpos(query, %s) > 0"
        " AND clock_timestamp() - query_start >= make_interval(secs => %s)",
        (DATABASE, WATCHER, text, for_at_least),
    ).fetchall()
    return [int(pid) for (pid,) in rows]


def running(conn: psycopg.Connection[tuple[Any, ...]], text: str, for_at_least: float = 0.0) -> int:
    """The pid of the one backend running a statement that holds ``text``, once it has run for
    ``for_at_least`` seconds (bounded)."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        pids = statements(conn, text, for_at_least)
        if pids:
            (pid,) = pids
            return pid
    raise AssertionError(f"no statement with {text!r} ran within {BOUND} s")


def stopped(conn: psycopg.Connection[tuple[Any, ...]], pid: int, demo: Demo) -> str:
    """The state of backend ``pid`` once it runs no statement any more (bounded)."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        (state,) = conn.execute(
            "SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone() or ("gone",)
        if state != "active":
            return str(state)
    activity = conn.execute(
        "SELECT state, wait_event_type, wait_event, now() - query_start, left(query, 60)"
        " FROM pg_stat_activity WHERE pid = %s",
        (pid,),
    ).fetchone()
    raise AssertionError(
        f"backend {pid} still ran its statement after {BOUND} s: {activity}; "
        f"the demo logged: {demo.drained()[-20:]}"
    )


def cancelled_in_log(postgres: Cluster, pid: int) -> list[str]:
    return [line for line in postgres.logged_statements(CANCELLED) if f"[{pid}]" in line]


@pytest.mark.timeout(300)
def test_the_report_gives_the_same_figures_as_on_sqlite(
    demo: Demo, tmp_path: Path, watcher: psycopg.Connection[tuple[Any, ...]]
) -> None:
    (employees,) = watcher.execute(f"SELECT count(*) FROM {SCHEMA}.employees").fetchone() or (0,)
    assert employees == 500
    page = httpx.get(f"{demo.url}/", timeout=BOUND)
    assert "employee by employee, from\n  PostgreSQL." in page.text
    with running_demo(tmp_path / "demo.sqlite3") as on_sqlite, ThreadPoolExecutor(2) as pool:
        # Both at once: each report takes seconds, tens of them on a loaded machine.
        reports = [
            pool.submit(httpx.get, f"{server.url}/report", timeout=240)
            for server in (demo, on_sqlite)
        ]
        on_postgres, sqlite = (future.result() for future in reports)
    assert on_postgres.status_code == sqlite.status_code == 200
    assert len(on_postgres.json()) == 500
    assert on_postgres.json() == sqlite.json()
    demo.wait_for_line(r"demo_app\.report_postgres: report of 500 employees in")


def test_a_client_that_leaves_stops_the_long_query_on_the_server(
    demo: Demo, postgres: Cluster, watcher: psycopg.Connection[tuple[Any, ...]]
) -> None:
    with requesting(demo, "/report/pairs"):
        demo.wait_for_line(r"demo_app\.report_postgres: query started")
        # Executing for half a second, not just "active": a backend is active from the Parse
        # message on, and ignores a cancel that comes while it reads the next message (the
        # instant before the statement, docs/databases.md's Limits).
        pid = running(watcher, PAIRS, for_at_least=0.5)
    # The statement runs for about a minute when nothing stops it; the bound is 15 s.
    assert stopped(watcher, pid, demo) == "idle"
    demo.wait_for_line(r"demo_app\.report_postgres: query interrupted")
    demo.wait_for_line(r"fastapi_abort: GET /report/pairs: 499 Client Closed Request after")
    assert len(cancelled_in_log(postgres, pid)) >= 1


def test_a_client_that_leaves_stops_the_report_between_or_during_statements(
    demo: Demo, watcher: psycopg.Connection[tuple[Any, ...]]
) -> None:
    with requesting(demo, "/report"):
        pid = running(watcher, SALES)
    demo.wait_for_line(r"fastapi_abort: GET /report: 499 Client Closed Request after")
    assert stopped(watcher, pid, demo) == "idle"
    assert statements(watcher, SALES) == []
