"""fastapi-abort behind nginx: Debian's nginx in front of uvicorn, real sockets that leave.

One uvicorn (httptools, uvloop) runs ``tests.proxy.app`` for the whole module; four nginx
configurations (the columns, ``tests.proxy.nginx.COLUMNS``) run in front of it in turn. Each test
is one scenario (a row) in one column. The client talks to nginx; the test waits for the app's
events through the app's long-poll (straight to uvicorn) and for nginx's log line of the request
through nginx's syslog output, never by sleeping.

Each cell appends one JSON line to ``$ABORT_MATRIX_DIR/<column>.jsonl`` (``build/matrix/`` by
default), written before the cell's assertions so that a failing cell is recorded too: whether
the token tripped, the delay from the client's close to the trip (the client's
``time.monotonic_ns()`` just before ``close()`` against the app's, taken in the token's callback;
CLOCK_MONOTONIC is one clock for the machine), and what nginx logged for the request.

Locally the module skips when nginx is missing; under ``CI=true`` it fails.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import ROOT
from tests.proxy.nginx import (
    COLUMNS,
    NGINX_MISSING,
    Nginx,
    Settings,
    nginx_installed,
    nginx_version,
    run_nginx,
)
from tests.proxy.upstream import Upstream, serving
from tests.raw_http import leave, new_id, read_responses, read_until, request_bytes
from tests.support import missing

pytestmark = pytest.mark.server

MATRIX_DIR_VARIABLE = "ABORT_MATRIX_DIR"
DEFAULT_MATRIX_DIR = ROOT / "build" / "matrix"

#: A body large enough that uvicorn stops reading it part way (its high-water mark is 64 KiB).
LARGE_BODY = bytes(range(256)) * 4096
#: How long a client that has uploaded its body stays before leaving ("a long wait"), and how long
#: a test waits for a trip that must not come. The app is asked, with this bound, whether the
#: token tripped: the wait itself checks that nothing trips while the client is still there.
STAY_SECONDS = 0.5
#: The access-log line of a request (error-log lines quote the request too, after "request: ").
ACCESS_LINE = '"{method} {path} HTTP/1.1" '
#: An error-log line: date, time, [level], pid#tid, then *connection and the message.
ERROR_LINE = re.compile(
    r"^\S+ \S+ \[(?P<level>\w+)\] \d+#\d+: (?:\*\d+ )?(?P<message>.*?)"
    r"(?:, client: .*)?$"
)
#: The error-log levels nginx may use for what these tests do, and the warnings it may give.
QUIET_LEVELS = ("info", "notice")
EXPECTED_WARNINGS = ("a client request body is buffered to a temporary file",)


# -- the app server, the proxies, the records --------------------------------------------------


@dataclass
class Matrix:
    """Writes one JSON line per cell to ``<directory>/<column>.jsonl``."""

    directory: Path
    versions: dict[str, str]

    def write(
        self, column: str, scenario: str, trips: bool, delay_ms: float | None, note: str
    ) -> None:
        cell = {
            "column": column,
            "scenario": scenario,
            "trips": trips,
            "delay_ms": None if delay_ms is None else round(delay_ms, 3),
            "note": note,
            "versions": self.versions,
        }
        with (self.directory / f"{column}.jsonl").open("a") as out:
            out.write(json.dumps(cell) + "\n")


def require_nginx() -> None:
    if nginx_installed():
        return
    missing(NGINX_MISSING, "the nginx tests")


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    require_nginx()
    directory = Path(os.environ.get(MATRIX_DIR_VARIABLE) or DEFAULT_MATRIX_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    # One run per file: start the columns afresh.
    for settings in COLUMNS:
        (directory / f"{settings.name}.jsonl").write_text("")
    packages = ("fastapi-abort", "fastapi", "starlette", "anyio", "uvicorn", "httptools", "uvloop")
    versions = {name: importlib.metadata.version(name) for name in packages}
    versions["nginx"] = nginx_version()
    versions["python"] = platform.python_version()
    return Matrix(directory, versions)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    require_nginx()
    with serving(tmp_path_factory.mktemp("uvicorn") / "server.log") as served:
        yield served


@pytest.fixture(scope="module", params=COLUMNS, ids=lambda settings: settings.name)
def proxy(
    request: pytest.FixtureRequest, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nginx]:
    settings: Settings = request.param
    with run_nginx(upstream.port, settings, tmp_path_factory.mktemp(settings.name)) as nginx:
        yield nginx
    lines = nginx.error_log.read_text().splitlines()
    loud = [
        line
        for line in lines
        if not any(f"[{level}]" in line for level in QUIET_LEVELS)
        and not any(warning in line for warning in EXPECTED_WARNINGS)
    ]
    assert not loud, "\n".join(lines)
    # The file holds the access-log lines the tests read from syslog.
    access = nginx.access_log.read_text().splitlines()
    assert access == [line for line in nginx.feed.lines() if line.startswith('"')]


# -- what nginx logged ---------------------------------------------------------------------------


@dataclass
class Logged:
    """nginx's access-log line for one request, and its error-log lines (info and up)."""

    access: str
    errors: list[str]

    @property
    def status(self) -> int:
        return int(self.access.split('" ', 1)[1].split(" ", 1)[0])

    @property
    def completed(self) -> bool:
        """``$request_completion``: "OK" once the whole response went out."""
        return " completion=OK" in self.access

    @property
    def connection(self) -> int:
        match = re.search(r"connection=(\d+)/", self.access)
        assert match is not None, self.access
        return int(match.group(1))

    def summary(self) -> str:
        """``nginx 499; [info] epoll_wait() reported that client prematurely closed ...``."""
        parts = [f"nginx {self.status}"]
        for line in self.errors:
            match = ERROR_LINE.match(line)
            assert match is not None, line
            # Without the temporary file's path, which changes with every run.
            message = re.sub(r" /\S+", "", match["message"])
            parts.append(f"[{match['level']}] {message}")
        return "; ".join(parts)


def logged(proxy: Nginx, path: str, method: str = "GET") -> Logged:
    """Wait for the access-log line of the request to ``path``; with the error lines before it."""
    request_line = ACCESS_LINE.format(method=method, path=path)
    access = proxy.feed.wait_for(request_line, where=lambda line: line.startswith(request_line))
    errors = proxy.feed.lines(f'request: "{method} {path} HTTP/1.1"')
    return Logged(access, errors)


# -- one client that leaves ------------------------------------------------------------------------


@dataclass
class Left:
    """What happened once a client left: the app's record, the delay, nginx's lines."""

    result: dict[str, Any]
    delay_ms: float | None
    nginx: Logged

    @property
    def trips(self) -> bool:
        return bool(self.result["tripped"])

    def note(self, *more: str) -> str:
        return "; ".join((self.nginx.summary(), *more))


def delay_ms(result: dict[str, Any], left_ns: int) -> float | None:
    """From the client's clock reading just before it left to the app's at the trip."""
    return (result["tripped_ns"] - left_ns) / 1e6 if result["tripped"] else None


def after_leaving(
    proxy: Nginx,
    upstream: Upstream,
    rid: str,
    path: str,
    left_ns: int,
    method: str = "GET",
) -> Left:
    result = upstream.wait_for(rid, "tripped")
    return Left(result, delay_ms(result, left_ns), logged(proxy, path, method))


def send_until_started(
    client: socket.socket, upstream: Upstream, rid: str, data: bytes
) -> dict[str, Any]:
    """Send ``data``; the app's record once the endpoint of ``rid`` runs."""
    client.sendall(data)
    result = upstream.wait_for(rid, "started")
    assert result["happened"], result
    return result


def hold_and_leave(proxy: Nginx, upstream: Upstream, how: str) -> tuple[str, Left]:
    rid = new_id()
    path = f"/hold/{rid}"
    with proxy.connect() as client:
        send_until_started(client, upstream, rid, request_bytes(path))
        left_ns = leave(client, how)
        left = after_leaving(proxy, upstream, rid, path, left_ns)
        if how == "half_close":
            # nginx answers nothing once it gave up on the request: it closes the connection.
            assert client.recv(65536) == b""
    return rid, left


def assert_quiet_trip(upstream: Upstream, rid: str, path: str, left: Left) -> None:
    """The token tripped because the client left, and the app logged its one quiet line."""
    assert left.trips, left
    assert left.result["reason"] == "client disconnected"
    result = upstream.wait_for(rid, "logged")
    assert result["finished"]
    pattern = rf"^[A-Z]+ {re.escape(path)}: 499 Client Closed Request after \d+\.\d{{3}} s$"
    assert len(result["log_lines"]) == 1, result
    assert re.match(pattern, result["log_lines"][0]), result


# -- the scenarios ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close_before_response", "rst", "half_close"])
def test_client_that_leaves_a_held_request_trips_the_token_and_nginx_logs_499(
    proxy: Nginx, upstream: Upstream, matrix: Matrix, how: str
) -> None:
    """Closing, resetting and half-closing (SHUT_WR) all make nginx give up on the request.

    nginx watches the client connection while it waits for the upstream
    (``ngx_http_upstream_check_broken_connection``, unless ``proxy_ignore_client_abort on``).
    With epoll it acts on EPOLLRDHUP, which a FIN raises: so a half-close is an abort too, and
    nginx closes the upstream connection, which uvicorn reports as ``http.disconnect``.
    """
    rid, left = hold_and_leave(proxy, upstream, "close" if how == "close_before_response" else how)
    matrix.write(proxy.column, how, left.trips, left.delay_ms, left.note())
    assert_quiet_trip(upstream, rid, f"/hold/{rid}", left)
    assert left.nginx.status == 499


def test_client_that_leaves_a_stream_trips_the_token_though_nginx_logs_200(
    proxy: Nginx, upstream: Upstream, matrix: Matrix
) -> None:
    """nginx logs the status it already sent (200), not 499, for a response cut short.

    ``ngx_http_terminate_request`` sets 499 as the status only if nothing was sent yet;
    ``$request_completion`` (empty unless the request completed) is what tells such a request
    apart in the access log.
    """
    rid = new_id()
    path = f"/stream/{rid}"
    with proxy.connect() as client:
        send_until_started(client, upstream, rid, request_bytes(path))
        # The first event reaches the client with proxy_buffering on too: nginx writes what it
        # has read whenever the upstream has nothing more to give at once.
        read_until(client, b"data: 0")
        left_ns = leave(client)
    left = after_leaving(proxy, upstream, rid, path, left_ns)
    matrix.write(
        proxy.column,
        "leave_mid_stream",
        left.trips,
        left.delay_ms,
        left.note("the status nginx had sent; $request_completion empty"),
    )
    assert_quiet_trip(upstream, rid, path, left)
    assert left.nginx.status == 200
    assert not left.nginx.completed


def test_completed_responses_on_kept_alive_connections_never_trip(
    proxy: Nginx, upstream: Upstream, matrix: Matrix
) -> None:
    """Completed responses never trip a token: not when the client closes its idle kept-alive
    connection, not when a later client leaves a request on the same (reused) upstream
    connection, not when nginx closes an idle upstream connection (on reload)."""
    keepalive = proxy.settings.upstream_keepalive
    done = [new_id() for _ in range(3)]
    with proxy.connect() as client:
        for rid in done:
            client.sendall(request_bytes(f"/quick/{rid}"))
            (response,) = read_responses(client)
            assert response.startswith(b"HTTP/1.1 200 "), response
            assert rid.encode() in response
    ports = [upstream.wait_for(rid, "final")["upstream_port"] for rid in done]
    client_connection = logged(proxy, f"/quick/{done[-1]}").connection
    # nginx noticed the client closing its idle connection.
    proxy.feed.wait_for(f"*{client_connection} client 127.0.0.1 closed keepalive connection")

    # A later client, on the upstream connection the completed requests used when nginx keeps
    # it alive, leaves: its own request trips, and only it.
    _, left = hold_and_leave(proxy, upstream, "close")
    later_port = left.result["upstream_port"]

    # One more completed request, whose upstream connection nginx then keeps idle (with
    # keepalive), until a reload makes nginx close it.
    idle = new_id()
    with proxy.connect() as client:
        client.sendall(request_bytes(f"/quick/{idle}"))
        read_responses(client)
    idle_port = upstream.wait_for(idle, "final")["upstream_port"]
    if keepalive:
        assert not upstream.connection(idle_port, "lost", timeout=0)["lost"]
        proxy.reload()
    closed = upstream.connection(idle_port, "lost")["lost"]

    results = [upstream.wait_for(rid, "final") for rid in (*done, idle)]
    statuses = {logged(proxy, f"/quick/{rid}").status for rid in (*done, idle)}
    tripped = any(result["tripped"] for result in results)
    reuse = (
        f"one upstream connection for the {len(done)} responses, reused by the next request"
        if len(set(ports)) == 1 and later_port == ports[0]
        else f"{len(set(ports))} upstream connections for {len(done)} responses"
    )
    matrix.write(
        proxy.column,
        "keepalive_complete",
        tripped,
        None,
        f"nginx {', '.join(map(str, sorted(statuses)))}; {reuse}; client closed its idle "
        "connection ([info] client closed keepalive connection); a later client that left "
        "tripped only its own request; the idle upstream connection closed "
        f"{'by nginx on reload' if keepalive else 'by uvicorn after each response (HTTP/1.0)'}",
    )
    assert not tripped, results
    assert all(result["can_be_cancelled_after_response"] is False for result in results)
    assert all(result["log_lines"] == [] for result in results)
    assert statuses == {200}
    assert left.trips
    assert closed
    if keepalive:
        assert set(ports) == {later_port}
    else:
        assert len({*ports, later_port}) == len(done) + 1


def test_client_that_leaves_after_a_full_upload_trips_the_token(
    proxy: Nginx, upstream: Upstream, matrix: Matrix
) -> None:
    """The app has read the whole body; the client stays a while, then leaves."""
    rid = new_id()
    path = f"/upload/{rid}"
    with proxy.connect() as client:
        data = request_bytes(path, method="POST", body=LARGE_BODY)
        assert send_until_started(client, upstream, rid, data)["body_size"] == len(LARGE_BODY)
        # The client is still there: nothing may trip while it stays.
        assert not upstream.wait_for(rid, "tripped", timeout=STAY_SECONDS)["tripped"]
        left_ns = leave(client)
    left = after_leaving(proxy, upstream, rid, path, left_ns, method="POST")
    matrix.write(proxy.column, "upload_then_leave", left.trips, left.delay_ms, left.note())
    assert_quiet_trip(upstream, rid, path, left)
    assert left.nginx.status == 499


def test_client_that_leaves_a_large_unread_body_is_not_heard(
    proxy: Nginx, upstream: Upstream, matrix: Matrix
) -> None:
    """Pinned limit: an endpoint that never reads a large body is not told the client left.

    The client sends a 1 MiB body, then leaves while the endpoint holds. uvicorn stops reading
    the upstream connection at 64 KiB of unread body (its flow control), and the middleware
    holds one body message the app has not taken and reads no further (the "known limit" in
    docs/how-it-works.md), so nothing reports the close. Workaround: read the body (any
    ``Body``, ``Form`` or ``UploadFile`` parameter does), as in the upload scenario, which trips.

    What nginx sees depends on ``proxy_request_buffering``. On (the default), nginx reads the
    whole body before it passes the request on, so it sees the client's FIN at once: 499. Off,
    it forwards the body as it reads it, and the app's backpressure can leave part of it unread
    with the FIN behind it: then nginx logs 499 (all forwarded before the FIN), 400 ("client
    prematurely closed connection" once it reads to the FIN) or, if it never gets that far, the
    status of the app's own response, passed on to a client that has gone. Which one depends
    on socket buffer sizes.
    """
    rid = new_id()
    path = f"/unread/{rid}"
    buffered = proxy.settings.request_buffering
    with proxy.connect() as client:
        data = request_bytes(path, method="POST", body=LARGE_BODY)
        started = send_until_started(client, upstream, rid, data)
        left_ns = leave(client)
    if buffered:
        # nginx has given up and closed the upstream connection: a trip would come now.
        assert logged(proxy, path, method="POST").status == 499
    result = upstream.wait_for(rid, "tripped", timeout=STAY_SECONDS)
    seen = upstream.connection(started["upstream_port"], "lost", timeout=0)["lost"]
    # Released, the endpoint answers; nginx then ends the request, whatever it waited for.
    upstream.release(rid)
    finished = upstream.wait_for(rid, "finished")
    left = Left(result, delay_ms(result, left_ns), logged(proxy, path, method="POST"))
    matrix.write(
        proxy.column,
        "unread_body",
        left.trips,
        left.delay_ms,
        left.note(
            f"uvicorn {'saw' if seen else 'did not see'} the upstream connection close "
            "(reading paused at 64 KiB of unread body); the middleware holds one unread body "
            "message and reads no further; workaround: read the body",
            "nginx read the whole body first (proxy_request_buffering on)"
            if buffered
            else "nginx forwarded the body as it read it: its status depends on whether it "
            "read to the client's FIN (499 or 400) or not (the app's status)",
        ),
    )
    assert not left.trips
    assert finished["happened"]
    assert not finished["tripped"]
    assert left.nginx.status in ((499,) if buffered else (499, 400, 200))


def test_client_that_leaves_with_a_pipelined_request_queued_trips_the_token(
    proxy: Nginx, upstream: Upstream, matrix: Matrix
) -> None:
    """nginx answers pipelined requests one at a time and sends the upstream one at a time, so
    a client that leaves with a request queued is seen as leaving (uvicorn-httptools on its own
    does not report it)."""
    first, held, queued = new_id(), new_id(), new_id()
    with proxy.connect() as client:
        requests = (f"/quick/{first}", f"/hold/{held}", f"/quick/{queued}")
        send_until_started(client, upstream, held, b"".join(map(request_bytes, requests)))
        assert first.encode() in read_until(client, b"}")
        left_ns = leave(client)
    left = after_leaving(proxy, upstream, held, f"/hold/{held}", left_ns)
    completed = upstream.wait_for(first, "final")
    matrix.write(
        proxy.column,
        "pipelined",
        left.trips,
        left.delay_ms,
        left.note(
            "3 requests pipelined: the first completed without tripping, the client left "
            "during the second with the third queued, which never reached the app"
        ),
    )
    assert_quiet_trip(upstream, held, f"/hold/{held}", left)
    assert left.nginx.status == 499
    assert not completed["tripped"]
    assert completed["can_be_cancelled_after_response"] is False
    assert proxy.feed.lines(f"/quick/{queued} ") == []


def test_client_that_expects_100_continue_is_answered_by_nginx_and_trips_the_token(
    proxy: Nginx, upstream: Upstream, matrix: Matrix
) -> None:
    """nginx answers ``Expect: 100-continue`` itself and does not pass the header on."""
    rid = new_id()
    path = f"/upload/{rid}"
    body = b"x" * 4096
    with proxy.connect() as client:
        head = request_bytes(path, method="POST", body=body)[: -len(body)]
        client.sendall(head[:-2] + b"Expect: 100-continue\r\n\r\n")
        assert read_until(client, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        result = send_until_started(client, upstream, rid, body)
        assert result["body_size"] == len(body)
        left_ns = leave(client)
    left = after_leaving(proxy, upstream, rid, path, left_ns, method="POST")
    forwarded = "expect" in result["headers"]
    matrix.write(
        proxy.column,
        "expect_continue",
        left.trips,
        left.delay_ms,
        left.note(
            "nginx sent 100 Continue itself; Expect "
            f"{'forwarded' if forwarded else 'not forwarded'} to the app"
        ),
    )
    assert_quiet_trip(upstream, rid, path, left)
    assert left.nginx.status == 499
    assert not forwarded
