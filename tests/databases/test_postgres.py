"""The docs' database examples (``docs/examples/db_*.py``) against a real PostgreSQL.

Each way (driver x pool x async/``def``) is served by uvicorn in a subprocess, a raw socket
leaves mid-query, and ``pg_stat_activity`` is read from a connection of the test's own. The
server logs every statement (``log_statement = all``) with a millisecond timestamp: the moment
a statement was cancelled is read there, against the wall-clock moment the client left (one
clock for the machine). The figures go to ``$DATABASE_RESULTS`` (JSON lines) when it is set, for
docs/databases.md.

``DB_ABORTS`` (default 60) sets the length of the mixed-load run; the figures on the docs page
come from a run with ``DB_ABORTS=1000``.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.databases.postgres import Cluster
from tests.raw_http import leave, new_id, read_response, request_bytes
from tests.serve import Served, running

pytestmark = pytest.mark.server

#: way -> (example module, extra environment)
WAYS: dict[str, tuple[str, dict[str, str]]] = {
    "asyncpg": ("db_asyncpg", {}),
    "psycopg-async": ("db_psycopg_async", {}),
    "psycopg-sync": ("db_psycopg_sync", {}),
    "sqlalchemy-async-asyncpg": ("db_sqlalchemy_async", {"DRIVER": "asyncpg"}),
    "sqlalchemy-async-psycopg": ("db_sqlalchemy_async", {"DRIVER": "psycopg"}),
    "sqlalchemy-sync-psycopg": ("db_sqlalchemy_sync", {}),
}
if os.environ.get("DB_EXTRA_WAY"):  # name=path: an app of the examples' shape, for a trial
    _name, _, _path = os.environ["DB_EXTRA_WAY"].partition("=")
    WAYS[_name] = (_path, {})
WATCHER = "fastapi-abort-watcher"
BOUND = 15.0  # seconds any wait may take before the test fails
SLOW = 60  # seconds of pg_sleep: a statement that ran to its end would fail every bound
CANCELLED = "canceling statement due to user request"
TIMED_OUT = "canceling statement due to statement timeout"
ABORTS = int(os.environ.get("DB_ABORTS", "60"))
STOP_SAMPLES = 5  # clients that leave mid-query, one after the other, per way
#: Where the server log timestamps a line (log_line_prefix = '%m [%p] ').
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \w+ \[(\d+)\] (.*)$")


def record(**figures: Any) -> None:
    results = os.environ.get("DATABASE_RESULTS")
    if results:
        with open(results, "a") as out:
            out.write(json.dumps(figures) + "\n")


@dataclass
class Watcher:
    """A connection of the test's own, that reads pg_stat_activity."""

    conn: psycopg.Connection[tuple[Any, ...]]
    database: str

    def app_backends(self) -> list[tuple[int, str, str]]:
        """(pid, state, query) of every client connection but this one, to ``database``."""
        rows = self.conn.execute(
            "SELECT pid, coalesce(state, ''), query FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND datname = %s"
            " AND application_name <> %s",
            (self.database, WATCHER),
        ).fetchall()
        return [(int(pid), str(state), str(query)) for pid, state, query in rows]

    def running_report(self) -> int:
        """The pid of the one report in progress, once it runs (bounded)."""
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            # Sleeping in pg_sleep, not just "active": a backend is active from the Parse
            # message on, and ignores a cancel that comes while it reads the next message.
            active = [
                int(pid)
                for (pid,) in self.conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                    " AND application_name <> %s AND wait_event = 'PgSleep'",
                    (self.database, WATCHER),
                )
            ]
            if active:
                (pid,) = active
                return pid
        raise AssertionError(f"no report ran within {BOUND} s: {self.app_backends()}")


@contextmanager
def watching(postgres: Cluster, database: str = "postgres") -> Iterator[Watcher]:
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/" + database
    with psycopg.connect(dsn, autocommit=True, application_name=WATCHER) as conn:
        watcher = Watcher(conn, database)
        # A statement still running from an earlier test would be that test's failure, and
        # would be taken for this test's report.
        assert [b for b in watcher.app_backends() if b[1] != "idle"] == []
        yield watcher


@contextmanager
def serving(
    way: str,
    postgres: Cluster,
    tmp_path: Path,
    pool_size: int = 3,
    database: str = "postgres",
    target: str = "tests.databases.db_app:app",
) -> Iterator[Served]:
    example, env = WAYS[way]
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/" + database
    environment = {
        "EXAMPLE": example,
        "DATABASE_URL": dsn,
        "POOL_SIZE": str(pool_size),
        **env,
    }
    log = tmp_path / f"{way}.log"
    with running("uvicorn-h11", log, target, env=environment) as served:
        try:
            served.get("/pool")  # answered once the lifespan has made the pool
        except httpx.HTTPError as exc:  # pragma: no cover - a failure, with the server's story
            raise AssertionError(served.output()) from exc
        yield served


def report(served: Served, tag: str, seconds: float) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{served.port}/report/{tag}", params={"seconds": seconds}, timeout=BOUND
    )


def send_report(served: Served, tag: str, seconds: float = SLOW) -> socket.socket:
    sock = served.connect(timeout=BOUND)
    sock.sendall(request_bytes(f"/report/{tag}?seconds={seconds}"))
    return sock


def output_with(served: Served, text: str) -> str:
    """The server's output once it holds ``text`` (bounded): uvicorn logs an error's traceback
    after the 500 is sent."""
    deadline = time.monotonic() + BOUND
    output = served.output()
    while text not in output and time.monotonic() < deadline:
        output = served.output()
    assert text in output, output
    return output


def cancelled_at(postgres: Cluster, pid: int, tag: str) -> float:
    """The wall-clock time the server logged the cancel of backend ``pid``'s statement: the
    first cancel on that backend after the statement that carried ``tag``."""
    seen = False
    for line in postgres.log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match is None or int(match.group(2)) != pid:
            continue
        seen = seen or tag in match.group(3)
        if seen and CANCELLED in match.group(3):
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    raise AssertionError(f"the server logged no cancel for backend {pid} after {tag}")


def assert_pool_healthy(served: Served, watcher: Watcher, pool_size: int) -> dict[str, Any]:
    """Nothing leaked, nothing stuck in a transaction, and the pool answers normal requests."""
    deadline = time.monotonic() + BOUND
    pool: dict[str, Any] = served.get("/pool")
    while pool["in_use"] and time.monotonic() < deadline:  # the last short ones ending
        pool = served.get("/pool")
    assert pool["in_use"] == 0, pool
    backends = watcher.app_backends()
    assert len(backends) <= pool_size, backends
    assert all(state == "idle" for _, state, _ in backends), backends
    for _ in range(2 * pool_size):
        tag = new_id()
        response = report(served, tag, 0)
        assert response.status_code == 200, response.text
        assert response.json() == tag
    return pool


@pytest.mark.parametrize("way", WAYS)
def test_the_statement_stops_on_the_server(way: str, postgres: Cluster, tmp_path: Path) -> None:
    """The client leaves mid-query: the server cancels the statement, the request ends as the
    quiet 499, and the pool is as good as before."""
    stopped_ms: list[float] = []
    with serving(way, postgres, tmp_path) as served, watching(postgres) as watcher:
        for _ in range(STOP_SAMPLES):
            tag = new_id()
            sock = send_report(served, tag)
            pid = watcher.running_report()
            left = time.time()
            leave(sock)
            result = served.wait_for(tag, "logged", timeout=BOUND)
            assert result["happened"], result
            assert (pid, "active") not in {(p, s) for p, s, _ in watcher.app_backends()}
            stopped_ms.append((cancelled_at(postgres, pid, tag) - left) * 1000)
            assert served.output().count(f"GET /report/{tag}: 499 Client Closed Request") == 1
        assert_pool_healthy(served, watcher, 3)
        assert served.noisy() == []
    record(test="stop", way=way, stopped_ms=[round(ms, 1) for ms in stopped_ms])


@pytest.mark.parametrize("way", WAYS)
def test_a_client_that_leaves_while_waiting_for_a_connection_never_starts_its_query(
    way: str, postgres: Cluster, tmp_path: Path
) -> None:
    with serving(way, postgres, tmp_path, pool_size=1) as served, watching(postgres) as watcher:
        holder, waiter = new_id(), new_id()
        holding = send_report(served, holder)
        watcher.running_report()
        waiting = send_report(served, waiter)
        assert served.wait_for(waiter, "started", timeout=BOUND)["happened"]
        leave(waiting)
        leave(holding)
        for tag in (holder, waiter):
            assert served.wait_for(tag, "logged", timeout=BOUND)["happened"]
        assert postgres.logged_statements(holder)  # the log shows a report's tag
        assert postgres.logged_statements(waiter) == []
        assert_pool_healthy(served, watcher, 1)
        assert served.noisy() == []


def create_database_with_timeout(postgres: Cluster) -> str:
    name = "timeouts"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return name
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"ALTER DATABASE {name} SET statement_timeout = '100ms'")
    return name


@pytest.mark.parametrize("way", WAYS)
def test_a_statement_timeout_is_reported_as_what_it_is(
    way: str, postgres: Cluster, tmp_path: Path
) -> None:
    """Not a 499: the token was never cancelled, the server's timeout stopped the statement."""
    database = create_database_with_timeout(postgres)
    with serving(way, postgres, tmp_path, database=database) as served:
        response = report(served, new_id(), 5)
        assert response.status_code == 500
        output = output_with(served, TIMED_OUT)
        assert "499 Client Closed Request" not in output


def test_query_cancelled_by_hand_is_an_error_too(postgres: Cluster, tmp_path: Path) -> None:
    """pg_cancel_backend() from elsewhere, while the client waits: an error, not a 499."""
    with serving("psycopg-sync", postgres, tmp_path) as served, watching(postgres) as watcher:
        sock = send_report(served, new_id())
        pid = watcher.running_report()
        watcher.conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
        response = read_response(sock)
        sock.close()
        assert response.startswith(b"HTTP/1.1 500"), response
        assert "499 Client Closed Request" not in output_with(served, CANCELLED)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("way", WAYS)
def test_aborts_mixed_with_normal_requests_on_a_small_pool(
    way: str, postgres: Cluster, tmp_path: Path
) -> None:
    """Clients that leave mid-query and clients that stay share a pool of 2: no normal request
    ever fails (a cancel that reached the next statement on a connection would fail one), and
    the pool ends with nothing leaked, nothing broken."""
    pool_size = 2
    aborted: list[str] = []
    normal: list[tuple[str, int, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def abort_client(served: Served, rng: random.Random) -> None:
        while len(aborted) < ABORTS and not failures:
            tag = new_id()
            # A short statement may end just as its cancel arrives: the race in which a cancel
            # could reach the connection's next statement.
            seconds = rng.choice((0.01, 0.02, 5))
            sock = send_report(served, tag, seconds)
            try:
                served.wait_for(tag, "started", timeout=BOUND)
                # Load shaping, not a wait for anything: leave while the request waits for a
                # connection, just after its statement started, or in the middle of it.
                time.sleep(rng.uniform(0, 0.03))
            finally:
                leave(sock, rng.choice(("close", "rst")))
            if seconds == 5:  # a short one may have answered before its client left
                result = served.wait_for(tag, "logged", timeout=BOUND)
                if not result["happened"]:
                    failures.append(f"abort {tag}: {result}")
            aborted.append(tag)

    def normal_client(served: Served) -> None:
        while not stop.is_set():
            tag = new_id()
            try:
                response = report(served, tag, 0.01)
            except httpx.HTTPError as exc:  # pragma: no cover - a failure, reported below
                failures.append(f"normal {tag}: {exc!r}")
                continue
            normal.append((tag, response.status_code, response.text))
            if response.status_code != 200 or response.json() != tag:
                failures.append(f"normal {tag}: {response.status_code} {response.text}")

    with (
        serving(way, postgres, tmp_path, pool_size=pool_size) as served,
        watching(postgres) as watcher,
    ):
        started = time.monotonic()
        threads = [
            threading.Thread(target=abort_client, args=(served, random.Random(seed)))
            for seed in range(2)
        ]
        normals = [threading.Thread(target=normal_client, args=(served,)) for _ in range(2)]
        for thread in (*threads, *normals):
            thread.start()
        for thread in threads:
            thread.join(550)
        stop.set()
        for thread in normals:
            thread.join(BOUND)
        seconds = time.monotonic() - started
        assert failures == []
        assert len(aborted) >= ABORTS
        pool = assert_pool_healthy(served, watcher, pool_size)
        noisy = served.noisy()
        assert noisy == []
    record(
        test="mixed",
        way=way,
        aborts=len(aborted),
        normal=len(normal),
        normal_failed=len(failures),
        discarded=pool["discarded"],
        seconds=round(seconds, 1),
    )


#: The old recipe, ``with ct.scope():``, and what the issue reported of it: the statement runs
#: on. SQLAlchemy on asyncpg and on psycopg, and psycopg's own async pool.
SCOPE_WAYS = {
    "sqlalchemy-async-asyncpg": "/scope/sqlalchemy",
    "sqlalchemy-async-psycopg": "/scope/sqlalchemy",
    "psycopg-async": "/scope/psycopg",
}


@pytest.mark.parametrize("way", SCOPE_WAYS)
def test_scope_leaves_the_statement_running_on_the_server(
    way: str, postgres: Cluster, tmp_path: Path
) -> None:
    """Why the docs say ``ct.run()``: inside ``scope()`` the driver's own cancel-and-wait is
    cancelled again, the request still ends as a clean 499, and the statement runs on."""
    target = "tests.databases.scope_app:app"
    with (
        serving(way, postgres, tmp_path, target=target) as served,
        watching(postgres) as watcher,
    ):
        tag = new_id()
        sock = served.connect(timeout=BOUND)
        sock.sendall(request_bytes(f"{SCOPE_WAYS[way]}/{tag}?seconds={SLOW}"))
        pid = watcher.running_report()
        leave(sock)
        result = served.wait_for(tag, "logged", timeout=BOUND)
        assert result["happened"], result
        try:
            assert watcher.running_report() == pid  # still in pg_sleep, its client long gone
        finally:
            # Waits (up to 10 s) for the backend to be gone, so that no later test sees it.
            watcher.conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))


def test_a_deadline_stops_the_statement_and_answers_504(postgres: Cluster, tmp_path: Path) -> None:
    """The route's deadline cancels the token (reason DEADLINE): ct.run() stops the statement
    on the server, and the client that stayed gets the deadline's 504, not a 499."""
    target = "tests.databases.scope_app:app"
    with (
        serving("psycopg-async", postgres, tmp_path, target=target) as served,
        watching(postgres) as watcher,
    ):
        tag = new_id()
        response = httpx.get(
            f"http://127.0.0.1:{served.port}/deadline/{tag}",
            params={"seconds": SLOW},
            timeout=BOUND,
        )
        assert response.status_code == 504, response.text
        assert [b for b in watcher.app_backends() if b[1] == "active"] == []
        assert "499 Client Closed Request" not in served.output()
    # The backend that ran the tagged statement logged its cancel (cancelled_at() raises if not).
    (pid,) = {int(m.group(2)) for m in map(LOG_LINE.match, postgres.logged_statements(tag)) if m}
    cancelled_at(postgres, pid, tag)
