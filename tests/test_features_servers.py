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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve import KINDS, running

pytestmark = pytest.mark.server


@dataclass
class Server:
    kind: str
    port: int
    log: Path

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)

    def get(self, path: str, **params: Any) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        return httpx.get(url, params=params, timeout=30).json()

    def wait_for(self, rid: str, what: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/await/{rid}/{what}", timeout=15)
        return result

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    kind: str = request.param
    log = tmp_path_factory.mktemp(kind) / "server.log"
    with running(kind, log, "tests.features_app:app") as port:
        yield Server(kind, port, log)
    # The only lines above INFO are the deadline's own WARNING lines.
    noisy = [
        line
        for line in Server(kind, 0, log).lines()
        if re.search(r"WARNING|ERROR|Traceback", line) and "504 Gateway Timeout" not in line
    ]
    assert not noisy, log.read_text()


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    return int(status_line.split()[1]), headers, body


def test_a_deadline_answers_the_waiting_client_with_a_problem_504(server: Server) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(f"GET /deadline/{rid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, headers, body = read_response(client)
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
    assert not [line for line in server.lines() if "499" in line and rid in line]


def test_a_preemptive_endpoint_is_cancelled_when_the_client_leaves(server: Server) -> None:
    rid = new_id()
    with server.connect() as client:
        client.sendall(f"GET /preempt/{rid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
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


def open_websocket(server: Server, path: str) -> socket.socket:
    client = server.connect()
    key = base64.b64encode(os.urandom(16)).decode()
    client.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 101 "), data
    return client


def test_a_websocket_token_trips_when_the_peer_leaves(server: Server) -> None:
    rid = new_id()
    client = open_websocket(server, f"/ws/{rid}")
    with client:
        assert server.wait_for(rid, "started")["happened"]
    result = server.wait_for(rid, "tripped")
    assert result["reason"] == "client disconnected"
    assert server.wait_for(rid, "finished")["happened"]
    # A peer that leaves a WebSocket is its normal end: no 499 line, no hook.
    assert server.get(f"/hooked/{rid}") == {}
    assert not [line for line in server.lines() if "499" in line and rid in line]
