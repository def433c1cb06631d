"""Deadlines, preemptive mode, the on_abort hook and WebSockets, on real servers.

``tests.features_app`` runs under each server configuration of ``tests.serve``; the clients are
raw sockets on 127.0.0.1 that stay, or leave mid-request.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
from collections.abc import Iterator

import pytest

from tests.raw_http import new_id, read_response, read_until, request_bytes
from tests.serve import KINDS, Served, running

pytestmark = pytest.mark.server


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    kind: str = request.param
    log = tmp_path_factory.mktemp(kind) / "server.log"
    with running(kind, log, "tests.features_app:app") as served:
        yield served
    # The only lines above INFO are the deadline's own WARNING lines.
    assert not served.noisy("504 Gateway Timeout"), served.output()


def read_parsed(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body: its status, headers (lower-case names), body."""
    head, _, body = read_response(sock).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def lines_with(server: Served, *texts: str) -> list[str]:
    """The lines of the server's output that contain every one of ``texts``."""
    return [line for line in server.output().splitlines() if all(t in line for t in texts)]


def test_a_deadline_answers_the_waiting_client_with_a_problem_504(server: Served) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/deadline/{rid}"))
        status, headers, body = read_parsed(client)
    assert status == 504
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Gateway Timeout",
        "status": 504,
        "detail": "The request did not complete within its 0.2 s deadline.",
    }
    result = server.wait_for(rid, "logged")
    assert result["reason"] == "deadline"
    assert result["finished"]
    (line,) = result["log_lines"]
    assert line.startswith(f"GET /deadline/{rid}: 504 Gateway Timeout: its 0.200 s deadline")
    hooked = server.get(f"/hooked/{rid}")
    assert (hooked["status_code"], hooked["reason"]) == (504, "deadline")
    assert hooked["elapsed"] >= 0.2
    assert not lines_with(server, ": 499 Client Closed Request", rid)


def test_a_preemptive_endpoint_is_cancelled_when_the_client_leaves(server: Served) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(request_bytes(f"/preempt/{rid}"))
        assert server.wait_for(rid, "started")["happened"]
    result = server.wait_for(rid, "logged")
    assert result["reason"] == "client disconnected"
    assert result["finished"]  # its `finally` ran: cancelled at its await, not abandoned
    (line,) = result["log_lines"]
    assert re.match(rf"^GET /preempt/{rid}: 499 Client Closed Request after \d+\.\d{{3}} s$", line)
    hooked = server.get(f"/hooked/{rid}")
    assert hooked == {
        "method": "GET",
        "path": f"/preempt/{rid}",
        "status_code": 499,
        "elapsed": hooked["elapsed"],
        "reason": "client disconnected",
    }


def open_websocket(server: Served, path: str) -> socket.socket:
    client = server.connect()
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (("Upgrade", "websocket"), ("Connection", "Upgrade"))
    handshake = (("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13"))
    client.sendall(request_bytes(path, headers=(*upgrade, *handshake)))
    data = read_until(client, b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 101 "), data
    return client


def test_a_websocket_token_trips_when_the_peer_leaves(server: Served) -> None:
    rid = new_id()
    client = open_websocket(server, f"/ws/{rid}")
    with client:
        assert server.wait_for(rid, "started")["happened"]
    result = server.wait_for(rid, "tripped")
    assert result["reason"] == "client disconnected"
    assert server.wait_for(rid, "finished")["happened"]
    # A peer that leaves a WebSocket is its normal end: no 499 line, no hook.
    assert server.get(f"/hooked/{rid}") == {}
    assert not lines_with(server, ": 499 Client Closed Request", rid)
