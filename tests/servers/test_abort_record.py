"""The abort record (``AbortedRequest``): what the app had sent when its client left.

``tests.servers.record_app`` runs under each server configuration of ``tests.serve``; the
clients are raw sockets on 127.0.0.1 that leave before the response, or mid-stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.raw_http import new_id, read_until, request_bytes
from tests.serve import KINDS, Served, running
from tests.servers.record_app import CHUNKS, LAST, SIZE

pytestmark = pytest.mark.server


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    kind: str = request.param
    log = tmp_path_factory.mktemp(kind) / "server.log"
    with running(kind, log, "tests.servers.record_app:app") as served:
        yield served
    assert not served.noisy(), served.output()


def hooked(server: Served, rid: str) -> dict[str, Any]:
    record: dict[str, Any] = server.get(f"/hooked/{rid}")
    return record


def test_a_client_that_leaves_before_the_response_has_nothing_delivered(server: Served) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/before/{rid}"))
        assert server.get(f"/started/{rid}") is True
    record = hooked(server, rid)
    assert record == {
        "method": "GET",
        "path": f"/before/{rid}",
        "status_code": 499,
        "elapsed": record["elapsed"],
        "reason": "client disconnected",
        "response_started": False,
        "status_sent": None,
        "body_bytes": 0,
        "body_messages": 0,
        "first_byte_after": None,
    }


def test_a_client_that_leaves_mid_stream_has_every_chunk_it_was_sent_counted(
    server: Served,
) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/stream/{rid}"))
        read_until(client, LAST)  # every chunk has reached the client
    record = hooked(server, rid)
    assert (record["status_code"], record["reason"]) == (499, "client disconnected")
    assert (record["response_started"], record["status_sent"]) == (True, 200)
    assert (record["body_messages"], record["body_bytes"]) == (CHUNKS, CHUNKS * SIZE)
    assert 0 < record["first_byte_after"] <= record["elapsed"]


def test_a_stream_that_never_took_its_token_is_counted_too(server: Served) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/plain/{rid}"))
        read_until(client, LAST)
    record = hooked(server, rid)
    assert (record["status_code"], record["reason"]) == (499, "client disconnected")
    assert (record["response_started"], record["status_sent"]) == (True, 200)
    # The stream goes on until Starlette hears the disconnect: CHUNKS or more, every one whole.
    assert record["body_messages"] >= CHUNKS
    assert record["body_bytes"] == record["body_messages"] * SIZE
    assert 0 < record["first_byte_after"] <= record["elapsed"]
