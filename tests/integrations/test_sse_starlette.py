"""sse-starlette's ``EventSourceResponse`` with fastapi-abort, on real servers.

``tests.integrations.apps.sse_starlette_app`` runs with the plugin (``app``) and without
(``plain``): a stream the client reads to its end is the same on both, pings included; a client
that leaves stops the generator, and with the plugin its token trips and the request ends as
one quiet line. sse-starlette's README pattern (a generator polling ``request.is_disconnected()``)
is run on granian too, which answers a cancelled ``receive()`` with a false ``http.disconnect``
(``tests.integrations.apps.granian_disconnect``): with the plugin no client that stays is taken
for gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.integrations.twin_servers import Start, assert_quiet_line, headers_of, twin_servers
from tests.raw_http import leave, new_id, read_until, request_bytes

pytestmark = pytest.mark.server

MODULE = "tests.integrations.apps.sse_starlette_app"
SERVERS = ("uvicorn-h11", "hypercorn-asyncio", "granian")
PING_LINE = re.compile(rb": ping - [^\r\n]*\r\n\r\n")
#: Requests of the polling pattern per server: granian cut 14 to 19 of 20 short without the
#: plugin, and the plugin before it never cancelled the server's receive() 15 to 20 of 20.
POLLING_REQUESTS = 20
#: How a generator ends when its client leaves: the token (OperationCancelled out of its
#: ct.sleep), or sse-starlette cancelling it (CancelledError).
STOPPED = ("OperationCancelled", "CancelledError")


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    with twin_servers(MODULE, tmp_path_factory.mktemp("sse-starlette")) as start:
        yield start


def get(start: Start, kind: str, variant: str, path: str) -> httpx.Response:
    served = start(kind, variant)
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
        return client.get(path)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_stream_read_to_its_end_is_the_same_with_the_plugin(start: Start, kind: str) -> None:
    with_plugin = get(start, kind, "app", f"/events/{new_id()}?n=3")
    without = get(start, kind, "plain", f"/events/{new_id()}?n=3")
    assert with_plugin.status_code == without.status_code == 200
    assert headers_of(with_plugin) == headers_of(without)
    # The pings (every 0.05 s, the events 0.2 s apart) carry the time: compare the events.
    for response in (with_plugin, without):
        assert PING_LINE.search(response.content), response.content
    events = PING_LINE.sub(b"", with_plugin.content)
    assert events == PING_LINE.sub(b"", without.content)
    assert events == b"".join(b"event: tick\r\ndata: %d\r\n\r\n" % i for i in range(3))


def leave_after_first_event(start: Start, kind: str, variant: str, path: str) -> None:
    with start(kind, variant).connect() as client:
        client.sendall(request_bytes(path))
        read_until(client, b"data: 0")
        leave(client)


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("route", ["events", "events-sync"])
def test_a_client_that_leaves_mid_stream_trips_the_token(
    start: Start, kind: str, route: str
) -> None:
    served = start(kind, "app")
    rid = new_id()
    leave_after_first_event(start, kind, "app", f"/{route}/{rid}")
    result = served.wait_for(rid, "logged")
    assert result["reason"] == "client disconnected"
    # The token and sse-starlette's own listener hear the same disconnect: the generator ends
    # at its await by whichever acts first.
    assert served.wait_for(rid, "finished")["ended"] in STOPPED
    assert_quiet_line(served, f"/{route}/{rid}", result["log_lines"])


@pytest.mark.parametrize("kind", SERVERS)
def test_without_the_plugin_sse_starlette_cancels_the_generator(start: Start, kind: str) -> None:
    served = start(kind, "plain")
    rid = new_id()
    leave_after_first_event(start, kind, "plain", f"/events/{rid}")
    result = served.wait_for(rid, "finished")
    assert result["ended"] == "CancelledError"
    assert result["log_lines"] == []


def test_a_client_that_leaves_before_the_response_ends_quietly(start: Start) -> None:
    served = start("uvicorn-h11", "app")
    rid = new_id()
    with served.connect() as client:
        client.sendall(request_bytes(f"/before/{rid}"))
        assert served.wait_for(rid, "started")["happened"]
        leave(client)
    result = served.wait_for(rid, "logged")
    assert result["ended"] == "OperationCancelled"
    assert_quiet_line(served, f"/before/{rid}", result["log_lines"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("route", ["polling", "polling-only"])
def test_polling_is_disconnected_takes_no_client_that_stays_for_gone(
    start: Start, kind: str, route: str
) -> None:
    """sse-starlette's README pattern, with the plugin, the token taken (``polling``) or not
    (``polling-only``): every stream runs to its end, no token trips, nothing is logged."""
    served = start(kind, "app")
    cut_short: list[dict[str, object]] = []
    for _ in range(POLLING_REQUESTS):
        rid = new_id()
        response = get(start, kind, "app", f"/{route}/{rid}?n=5")
        result = served.wait_for(rid, "finished")
        whole = response.content.count(b"event: tick") == 5 and result["ended"] == "completed"
        if not whole or result["tripped"] or result["log_lines"]:
            cut_short.append(result)
    assert cut_short == []
    assert not re.search(rf"GET /{route}/\w+: 499", served.output())
