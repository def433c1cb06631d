"""Real servers on 127.0.0.1, real sockets that leave mid-request.

Each server configuration runs ``tests.server_app`` in its own process, on a listening socket the
test bound itself. The app records per request id what its token did; the tests wait for those
events through ``/await/{rid}/{what}`` (a bounded wait on the server side), never by sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.raw_http import How, leave, new_id, read_responses, read_until, request_bytes
from tests.serve import KINDS, Served, assert_one_quiet_line, running

pytestmark = pytest.mark.server


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    kind: str = request.param
    with running(kind, tmp_path_factory.mktemp(kind) / "server.log") as served:
        yield served
    # Nothing above INFO from any logger, in the whole life of the server.
    assert not served.noisy(), served.output()


def leave_mid_request(
    server: Served, path: str, rid: str, how: How = "close", wait: str = "logged"
) -> dict[str, Any]:
    """GET ``path`` and leave as ``how`` says once the endpoint runs; the app's record of ``rid``
    once ``wait`` happened (waited for before the socket is closed, if it is not yet)."""
    with server.connect() as client:
        client.sendall(request_bytes(path))
        assert server.wait_for(rid, "started")["happened"]
        leave(client, how)
        return server.wait_for(rid, wait)


def test_client_that_closes_mid_request_trips_the_token(server: Served) -> None:
    rid = new_id()
    result = leave_mid_request(server, f"/hold/{rid}", rid)
    assert result["tripped"]
    assert result["reason"] == "client disconnected"
    assert result["finished"]
    assert_one_quiet_line(server, f"/hold/{rid}", result)


def test_client_that_resets_the_connection_trips_the_token(server: Served) -> None:
    rid = new_id()
    result = leave_mid_request(server, f"/hold/{rid}", rid, "rst")
    assert result["tripped"]
    assert result["reason"] == "client disconnected"


def test_client_that_half_closes_trips_the_token(server: Served) -> None:
    rid = new_id()
    result = leave_mid_request(server, f"/hold/{rid}", rid, "half_close", wait="tripped")
    assert result["tripped"]
    assert result["reason"] == "client disconnected"


def test_dependency_awaiting_the_token_is_cancelled_when_client_leaves(server: Served) -> None:
    rid = new_id()
    result = leave_mid_request(server, f"/dependency/{rid}", rid)
    assert result["tripped"]
    assert result["finished"]
    assert_one_quiet_line(server, f"/dependency/{rid}", result)


def test_sync_endpoint_in_a_thread_stops_at_its_next_check(server: Served) -> None:
    rid = new_id()
    result = leave_mid_request(server, f"/hold-sync/{rid}", rid)
    assert result["tripped"]
    assert result["finished"]
    # wait_blocking() woke at the trip and the next check raised: no further step ran.
    assert result["steps_after_trip"] == 1
    assert_one_quiet_line(server, f"/hold-sync/{rid}", result)


@pytest.mark.parametrize("route", ["stream", "stream-sync"])
def test_client_that_leaves_a_streaming_response_trips_the_token(
    server: Served, route: str
) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/{route}/{rid}"))
        read_until(client, b"data: 0")
        assert server.wait_for(rid, "started")["happened"]
    # The generator ends, if only when collected: a def generator that Starlette stopped
    # between two chunks is never resumed, and its finally runs after the response's log line.
    assert server.wait_for(rid, "finished")["happened"]
    result = server.wait_for(rid, "logged")
    assert result["tripped"]
    assert result["reason"] == "client disconnected"
    assert_one_quiet_line(server, f"/{route}/{rid}", result)


def test_client_that_leaves_after_a_full_upload_trips_the_token(server: Served) -> None:
    rid = new_id()
    body = bytes(range(256)) * 4096  # 1 MiB, read whole by the endpoint first
    with server.connect() as client:
        client.sendall(request_bytes(f"/upload/{rid}", method="POST", body=body))
        result = server.wait_for(rid, "started")
        assert result["happened"]
        assert result["body_size"] == len(body)
    result = server.wait_for(rid, "logged")
    assert result["tripped"]
    assert result["finished"]


def test_completed_requests_on_a_kept_alive_connection_never_trip(server: Served) -> None:
    rids = [new_id() for _ in range(3)]
    with server.connect() as client:
        for rid in rids:
            client.sendall(request_bytes(f"/quick/{rid}"))
            (response,) = read_responses(client)
            assert rid.encode() in response
            # The background task runs after the response completed: the token is final.
            result = server.wait_for(rid, "final")
            assert result["happened"]
            assert result["can_be_cancelled_after_response"] is False
    # The connection is gone now; still nothing tripped and nothing was logged.
    for rid in rids:
        result = server.wait_for(rid, "final")
        assert not result["tripped"]
        assert result["log_lines"] == []
    quiet = [line for line in server.output().splitlines() if ": 499 Client Closed" in line]
    assert not [line for line in quiet if "/quick/" in line]


def test_concurrent_requests_each_get_their_own_token(server: Served) -> None:
    rids = [new_id() for _ in range(20)]
    clients = [server.connect() for _ in rids]
    try:
        for client, rid in zip(clients, rids, strict=True):
            client.sendall(request_bytes(f"/hold/{rid}"))
        # All twenty are in flight at once, so no token id can have been reused.
        results = [server.wait_for(rid, "started") for rid in rids]
        ids = [result["token_ids"] for result in results]
        assert all(len(token_ids) == 1 for token_ids in ids)
        assert len({token_ids[0] for token_ids in ids}) == len(rids)
    finally:
        for client in clients:
            client.close()
    for rid in rids:
        assert server.wait_for(rid, "logged")["tripped"]


def test_pipelined_requests_complete_without_tripping(server: Served) -> None:
    rids = [new_id() for _ in range(3)]
    with server.connect() as client:
        # All three at once, before reading any response: servers queue the later ones.
        client.sendall(b"".join(request_bytes(f"/quick/{rid}") for rid in rids))
        responses = read_responses(client, len(rids))
        for rid, response in zip(rids, responses, strict=True):
            assert rid.encode() in response
            result = server.wait_for(rid, "final")
            assert result["can_be_cancelled_after_response"] is False
    for rid in rids:
        result = server.wait_for(rid, "final")
        assert not result["tripped"]
        assert result["log_lines"] == []
