"""fastapi-abort behind every proxy of ``tests.proxy.fronts``: does it tell the app the client left?

One uvicorn (httptools, uvloop) runs ``tests.proxy.app`` for the whole module; each proxy
configuration (a column, ``tests.proxy.fronts.COLUMNS``) starts once and serves every row. The
client talks to the proxy; the test waits for the app's events through the app's long-poll and
for the proxy's access line through its log feed, never by sleeping. Each cell is recorded under
``$ABORT_PROXY_DIR`` (before its assertion, so a failing cell is recorded too) and must equal
``tests.proxy.expected.EXPECTED``; ``docs/servers.md`` ("Behind a proxy") is generated from the
records by ``python -m tests.proxy.page`` and checked against the same table here.

Locally a column skips when its proxy is not installed; under ``CI=true`` it fails.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.matrix import records
from tests.matrix.page import PAGE, word
from tests.proxy.expected import EXPECTED, SCENARIOS, measured
from tests.proxy.front import Column, Front
from tests.proxy.fronts import COLUMNS, results_dir, running_column, versions
from tests.proxy.page import section_words, title
from tests.proxy.upstream import Upstream, serving
from tests.raw_http import leave, new_id, read_responses, read_until, request_bytes

pytestmark = pytest.mark.server

#: 1 MiB: more than uvicorn's 64 KiB high-water mark and any proxy's buffers.
LARGE_BODY = bytes(range(256)) * 4096
#: How long a cell waits for a trip. A token that has not tripped by then is "no trip": the
#: proxy's own timeout (3 s) comes later, and would trip it for another reason.
TRIP_WAIT = 1.5
#: How long a client that uploaded its body stays before it leaves; nothing may trip meanwhile.
STAY_SECONDS = 0.5


@dataclass
class Observed:
    trips: bool
    delay_ms: float | None
    note: str
    #: What else the cell found wrong, asserted once the cell is recorded.
    wrong: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with serving(tmp_path_factory.mktemp("uvicorn") / "server.log") as served:
        yield served


@pytest.fixture(scope="module")
def front(
    request: pytest.FixtureRequest, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Front]:
    column: Column = request.param
    directory = tmp_path_factory.mktemp(column.name)
    with running_column(column, upstream.port, directory, "the proxy tests", column.name) as proxy:
        yield proxy


def delay_ms(result: dict[str, Any], since_ns: int) -> float | None:
    return (result["tripped_ns"] - since_ns) / 1e6 if result["tripped"] else None


def started(client: Any, upstream: Upstream, rid: str, data: bytes) -> dict[str, Any]:
    client.sendall(data)
    result = upstream.wait_for(rid, "started")
    assert result["happened"], result
    return result


def finish(front: Front, upstream: Upstream, rid: str, path: str, method: str = "GET") -> str:
    """Release a request that did not trip, so that it ends; the proxy's access line."""
    upstream.release(rid)
    upstream.wait_for(rid, "finished")
    return front.access(path, method)[1]


def _left(
    front: Front, upstream: Upstream, rid: str, path: str, left_ns: int, method: str = "GET"
) -> Observed:
    result = upstream.wait_for(rid, "tripped", timeout=TRIP_WAIT)
    if result["tripped"]:
        line = front.access(path, method)[1]
        assert result["reason"] == "client disconnected", result
    else:
        line = finish(front, upstream, rid, path, method)
    return Observed(result["tripped"], delay_ms(result, left_ns), line)


def close_before_response(front: Front, upstream: Upstream, how: str = "close") -> Observed:
    rid = new_id()
    if front.column.http2:
        h2 = front.h2()
        h2.request(f"/hold/{rid}")
        assert upstream.wait_for(rid, "started")["happened"]
        left_ns = leave(h2.sock, how)
        return _left(front, upstream, rid, f"/hold/{rid}", left_ns)
    with front.connect() as client:
        started(client, upstream, rid, request_bytes(f"/hold/{rid}"))
        left_ns = leave(client, how)
    return _left(front, upstream, rid, f"/hold/{rid}", left_ns)


def rst(front: Front, upstream: Upstream) -> Observed:
    return close_before_response(front, upstream, "rst")


def leave_mid_stream(front: Front, upstream: Upstream) -> Observed:
    rid = new_id()
    if front.column.http2:
        h2 = front.h2()
        h2.read_until(h2.request(f"/stream/{rid}"), b"data: 0")
        left_ns = leave(h2.sock)
        return _left(front, upstream, rid, f"/stream/{rid}", left_ns)
    with front.connect() as client:
        client.sendall(request_bytes(f"/stream/{rid}"))
        read_until(client, b"data: 0")
        left_ns = leave(client)
    return _left(front, upstream, rid, f"/stream/{rid}", left_ns)


def upload_then_leave(front: Front, upstream: Upstream) -> Observed:
    rid = new_id()
    path = f"/upload/{rid}"
    if front.column.http2:
        h2 = front.h2()
        h2.request(path, "POST", LARGE_BODY)
        result = upstream.wait_for(rid, "started")
        assert result["body_size"] == len(LARGE_BODY)
        assert not upstream.wait_for(rid, "tripped", timeout=STAY_SECONDS)["tripped"]
        left_ns = leave(h2.sock)
        return _left(front, upstream, rid, path, left_ns, "POST")
    with front.connect() as client:
        result = started(client, upstream, rid, request_bytes(path, "POST", LARGE_BODY))
        assert result["body_size"] == len(LARGE_BODY)
        assert not upstream.wait_for(rid, "tripped", timeout=STAY_SECONDS)["tripped"]
        left_ns = leave(client)
    return _left(front, upstream, rid, path, left_ns, "POST")


def _h1_complete(front: Front, done: list[str]) -> int:
    """Each request to /quick on one kept-alive connection, if the proxy keeps it; how many
    client connections it took."""
    connections = 1
    client = front.connect()
    try:
        for rid in done:
            if client.fileno() < 0:
                # The proxy closed the client connection after the last response (Varnish's
                # pipe does): this request needs a connection of its own.
                client = front.connect()
                connections += 1
            client.sendall(request_bytes(f"/quick/{rid}"))
            (response,) = read_responses(client)
            assert response.startswith(b"HTTP/1.1 200 "), response
            if b"\r\nconnection: close\r\n" in response.lower():
                client.close()
    finally:
        client.close()
    return connections


def _h2_complete(front: Front, done: list[str]) -> None:
    """Each request to /quick on one HTTP/2 connection, one after the other."""
    h2 = front.h2()
    try:
        for rid in done:
            response = h2.read_response(h2.request(f"/quick/{rid}"))
            assert (b":status", b"200") in response.headers, response
            assert rid.encode() in response.body, response
    finally:
        h2.close()


def keepalive_complete(front: Front, upstream: Upstream) -> Observed:
    done = [new_id() for _ in range(3)]
    if front.column.http2:
        _h2_complete(front, done)
        connections = 1
    else:
        connections = _h1_complete(front, done)
    results = [upstream.wait_for(rid, "final") for rid in done]
    assert all(result["can_be_cancelled_after_response"] is False for result in results)
    ports = {result["upstream_port"] for result in results}
    statuses = sorted({front.access(f"/quick/{rid}")[0] for rid in done})
    return Observed(
        any(result["tripped"] for result in results),
        None,
        f"status {', '.join(map(str, statuses))}; {len(ports)} upstream connection(s) for "
        f"{len(done)} responses on {connections} client connection(s)",
    )


def _h2_status(front: Front, upstream: Upstream, rid: str, path: str) -> str:
    h2 = front.h2()
    try:
        sid = h2.request(path)
        assert upstream.wait_for(rid, "started")["happened"]
        headers = dict(h2.read_response(sid).headers)
        return headers.get(b":status", b"reset, no response").decode()
    finally:
        h2.close()


def proxy_timeout(front: Front, upstream: Upstream) -> Observed:
    rid = new_id()
    path = f"/hold/{rid}"
    if front.column.http2:
        sent_ns = time.monotonic_ns()
        status = _h2_status(front, upstream, rid, path)
        answered_ns = time.monotonic_ns()
        return _timed_out(front, upstream, rid, path, status, sent_ns, answered_ns)
    with front.connect() as client:
        sent_ns = time.monotonic_ns()
        started(client, upstream, rid, request_bytes(path))
        try:
            status = read_until(client, b"\r\n\r\n").split(b" ", 2)[1].decode()
        except ConnectionError:
            # Varnish's pipe closes both sides at its pipe_timeout, with no response.
            status = "no response (connection closed)"
        answered_ns = time.monotonic_ns()
    return _timed_out(front, upstream, rid, path, status, sent_ns, answered_ns)


def _timed_out(
    front: Front,
    upstream: Upstream,
    rid: str,
    path: str,
    status: str,
    sent_ns: int,
    answered_ns: int,
) -> Observed:
    result = upstream.wait_for(rid, "tripped", timeout=TRIP_WAIT)
    line = front.access(path)[1]
    if result["tripped"]:
        # The app cannot tell the proxy's timeout from a client that left.
        assert result["reason"] == "client disconnected", result
    else:
        finish(front, upstream, rid, path)
    after = (answered_ns - sent_ns) / 1e9
    return Observed(
        result["tripped"],
        delay_ms(result, answered_ns),
        f"the proxy answered {status} after {after:.1f} s; {line}",
    )


def _error(line: str) -> str:
    """An error line without its date, process and client: ``[info] client canceled ...``."""
    line = re.sub(r"^.*?\[(\w+)\] \d+#\d+: \*\d+ ", r"[\1] ", line)
    return line.split(", client: ")[0]


def rst_stream(front: Front, upstream: Upstream) -> Observed:
    """Two streams on one HTTP/2 connection, each held by the app; the client resets the first
    (RST_STREAM, CANCEL) and keeps the connection, as a browser does for a closed tab."""
    reset, sibling = new_id(), new_id()
    h2 = front.h2()
    try:
        reset_sid = h2.request(f"/hold/{reset}")
        sibling_sid = h2.request(f"/hold/{sibling}")
        reset_port = upstream.wait_for(reset, "started")["upstream_port"]
        sibling_port = upstream.wait_for(sibling, "started")["upstream_port"]
        left_ns = h2.reset(reset_sid)
        observed = _left(front, upstream, reset, f"/hold/{reset}", left_ns)
        wrong = []
        if upstream.wait_for(sibling, "tripped", timeout=STAY_SECONDS)["tripped"]:
            wrong.append("the sibling stream's token tripped")
        # uvicorn marks a connection lost before it tells the app, so no wait is needed here.
        reset_closed = upstream.connection(reset_port, "lost", timeout=0)["lost"]
        if observed.trips and not reset_closed:
            wrong.append("the reset stream's upstream connection stayed open")
        sibling_open = not upstream.connection(sibling_port, "lost", timeout=0)["lost"]
        if not sibling_open:
            wrong.append("the sibling's upstream connection closed")
        upstream.release(sibling)
        response = h2.read_response(sibling_sid)
        if (b":status", b"200") not in response.headers or sibling.encode() not in response.body:
            wrong.append(f"the sibling stream did not complete: {response}")
    finally:
        h2.close()
    finished = upstream.wait_for(sibling, "finished")
    if not finished["happened"] or finished["tripped"]:
        wrong.append(f"the sibling stream did not finish untripped: {finished}")
    errors = [_error(line) for line in front.feed.lines(reset) if "status=" not in line]
    sibling_line = front.access(f"/hold/{sibling}")[1]
    same = "the same" if reset_port == sibling_port else "another"
    note = (
        f"{observed.note}; {' '.join(errors) or 'no error line'}; the reset stream's upstream "
        f"connection {'closed' if reset_closed else 'stayed open'}, the sibling's "
        f"{'stayed open' if sibling_open else 'closed'} ({same} connection), and the sibling "
        f"completed: {sibling_line}"
    )
    return Observed(observed.trips, observed.delay_ms, note, wrong)


RUN = {
    "close_before_response": close_before_response,
    "rst": rst,
    "leave_mid_stream": leave_mid_stream,
    "upload_then_leave": upload_then_leave,
    "keepalive_complete": keepalive_complete,
    "proxy_timeout": proxy_timeout,
    "rst_stream": rst_stream,
}


#: Every measured cell, (column, (column name, row)): the column starts once for all its rows
#: (module scope); a row is keyed by its column too, so that pytest groups cells by column only.
CELLS = [
    (column, (column.name, scenario)) for column in COLUMNS for scenario in measured(column.name)
]


@pytest.mark.parametrize(
    ("front", "cell"),
    CELLS,
    indirect=["front"],
    scope="module",
    ids=lambda value: value.name if isinstance(value, Column) else value[1],
)
def test_cell_matches_the_expected_table(
    front: Front, upstream: Upstream, cell: tuple[str, str]
) -> None:
    scenario = cell[1]
    observed = RUN[scenario](front, upstream)
    name = front.column.name
    records.append(
        name,
        scenario,
        observed.trips,
        None if observed.delay_ms is None else round(observed.delay_ms, 3),
        observed.note,
        versions(front.column),
        results_dir(),
    )
    expected = EXPECTED[name][scenario]
    assert observed.trips == expected.trips, (observed, expected)
    assert observed.wrong == [], observed


def test_the_servers_page_says_what_the_expected_table_says() -> None:
    words = section_words(PAGE.read_text())
    for column in COLUMNS:
        for scenario in SCENARIOS:
            expected = word(EXPECTED[column.name][scenario])
            assert words[(column.name, title(scenario))] == expected, (column.name, scenario)
