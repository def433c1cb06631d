"""Real servers on 127.0.0.1, real sockets that leave mid-request.

Each server configuration runs ``tests.server_app`` in its own process, on a listening socket the
test bound itself. The app records per request id what its token did; the tests wait for those
events through ``/await/{rid}/{what}`` (a bounded wait on the server side), never by sleeping.
"""

from __future__ import annotations

import re
import socket
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve import KINDS, running

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    kind: str
    port: int
    log: Path

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)

    def wait_for(self, rid: str, what: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/await/{rid}/{what}"
        result: dict[str, Any] = httpx.get(url, params={"timeout": 15}, timeout=30).json()
        return result

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    kind: str = request.param
    log = tmp_path_factory.mktemp(kind) / "server.log"
    with running(kind, log) as port:
        srv = Server(kind, port, log)
        yield srv
    output = srv.output()
    # Nothing above INFO from any logger, in the whole life of the server.
    noisy = [line for line in output.splitlines() if re.search(r"WARNING|ERROR|Traceback", line)]
    assert not noisy, output


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def request_bytes(path: str, method: str = "GET", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\nContent-Type: application/octet-stream\r\n"
    return head.encode() + b"\r\n" + body


def read_responses(sock: socket.socket, count: int = 1) -> list[bytes]:
    """Read ``count`` complete responses with Content-Length bodies, in order."""
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            length = re.search(rb"(?i)content-length: (\d+)", data[:head_end])
            assert length is not None, data
            end = head_end + 4 + int(length.group(1))
            if len(data) >= end:
                responses.append(data[:end])
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert data == b""
    return responses


def assert_one_quiet_line(server: Server, rid: str, path: str, result: dict[str, Any]) -> None:
    pattern = rf"^GET {re.escape(path)}: 499 Client Closed Request after \d+\.\d{{3}} s$"
    assert len(result["log_lines"]) == 1, result
    assert re.match(pattern, result["log_lines"][0]), result
    assert server.output().count(f"{path}: 499 Client Closed Request") == 1


def test_client_that_closes_mid_request_trips_the_token(server: Server) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/hold/{rid}"))
        assert server.wait_for(rid, "started")["happened"]
    result = server.wait_for(rid, "logged")
    assert result["tripped"]
    assert result["reason"] == "client disconnected"
    assert result["finished"]
    assert_one_quiet_line(server, rid, f"/hold/{rid}", result)


def test_client_that_resets_the_connection_trips_the_token(server: Server) -> None:
    rid = new_id()
    client = server.connect()
    client.sendall(request_bytes(f"/hold/{rid}"))
    assert server.wait_for(rid, "started")["happened"]
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    result = server.wait_for(rid, "logged")
    assert result["tripped"]
    assert result["reason"] == "client disconnected"


def test_client_that_half_closes_trips_the_token(server: Server) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/hold/{rid}"))
        assert server.wait_for(rid, "started")["happened"]
        client.shutdown(socket.SHUT_WR)
        result = server.wait_for(rid, "tripped")
    assert result["tripped"]
    assert result["reason"] == "client disconnected"


def test_dependency_awaiting_the_token_is_cancelled_when_client_leaves(server: Server) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/dependency/{rid}"))
        assert server.wait_for(rid, "started")["happened"]
    result = server.wait_for(rid, "logged")
    assert result["tripped"]
    assert result["finished"]
    assert_one_quiet_line(server, rid, f"/dependency/{rid}", result)


def test_sync_endpoint_in_a_thread_stops_at_its_next_check(server: Server) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/hold-sync/{rid}"))
        assert server.wait_for(rid, "started")["happened"]
    result = server.wait_for(rid, "logged")
    assert result["tripped"]
    assert result["finished"]
    # wait_blocking() woke at the trip and the next check raised: no further step ran.
    assert result["steps_after_trip"] == 1
    assert_one_quiet_line(server, rid, f"/hold-sync/{rid}", result)


@pytest.mark.parametrize("route", ["stream", "stream-sync"])
def test_client_that_leaves_a_streaming_response_trips_the_token(
    server: Server, route: str
) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/{route}/{rid}"))
        received = b""
        while b"data: 0" not in received:
            chunk = client.recv(65536)
            assert chunk, received
            received += chunk
        assert server.wait_for(rid, "started")["happened"]
    result = server.wait_for(rid, "logged")
    assert result["tripped"]
    assert result["reason"] == "client disconnected"
    assert result["finished"]
    assert_one_quiet_line(server, rid, f"/{route}/{rid}", result)


def test_client_that_leaves_after_a_full_upload_trips_the_token(server: Server) -> None:
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


def test_completed_requests_on_a_kept_alive_connection_never_trip(server: Server) -> None:
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


def test_concurrent_requests_each_get_their_own_token(server: Server) -> None:
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


def test_pipelined_requests_complete_without_tripping(server: Server) -> None:
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
