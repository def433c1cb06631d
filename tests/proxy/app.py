"""The app that ``tests/test_nginx.py`` runs behind nginx, and how to run it under uvicorn.

``python -m tests.proxy.app FD`` runs it under uvicorn (httptools, uvloop) on an inherited
listening socket. Like ``tests/server_app.py``, it records per request id what the request's token
did, and tests wait for those events through ``/await/{rid}/{what}`` (a bounded wait on the server
side) instead of sleeping. On top of that it records what only a proxy test needs:

* ``time.monotonic_ns()`` in the token's callback, the moment it tripped. CLOCK_MONOTONIC is one
  clock for the whole machine, so the test subtracts its own reading taken just before it closed
  its socket to nginx: the detection delay through the proxy.
* The upstream connection each request came on (nginx's local port), and, through a uvicorn
  protocol subclass, when uvicorn saw that connection open and close
  (``/connection/{port}/{what}``): whether nginx reused a kept-alive upstream connection, and
  when it closed one.
* The request headers and HTTP version nginx forwarded.

Every request runs on the event loop thread only, so the records need no lock; they use asyncio
events, since uvicorn's protocol callbacks (where connections are recorded) run outside any task.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fastapi_abort import CancellationToken, RequestAborted, install

EVENTS = ("started", "tripped", "finished", "logged", "final", "released")
CONNECTION_EVENTS = ("made", "lost")
#: How long an endpoint that holds waits at most, for its token or its release.
HOLD_SECONDS = 30.0
#: uvicorn's idle keep-alive timeout, above nginx's upstream ``keepalive_timeout`` (60 s by
#: default), so that nginx, not uvicorn, closes idle upstream connections: uvicorn closing one
#: just as nginx reuses it fails that request (see tests/test_nginx.py).
TIMEOUT_KEEP_ALIVE = 75


def _events(names: tuple[str, ...]) -> dict[str, asyncio.Event]:
    return {name: asyncio.Event() for name in names}


@dataclass
class Record:
    events: dict[str, asyncio.Event] = field(default_factory=lambda: _events(EVENTS))
    reason: str | None = None
    tripped_ns: int | None = None
    upstream_port: int | None = None
    http_version: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_size: int = 0
    can_be_cancelled_after_response: bool | None = None
    log_lines: list[str] = field(default_factory=list)


@dataclass
class Connection:
    events: dict[str, asyncio.Event] = field(default_factory=lambda: _events(CONNECTION_EVENTS))


records: dict[str, Record] = {}
#: The latest connection from each client port (a port can be used again for a new one).
connections: dict[int, Connection] = {}


def record(rid: str) -> Record:
    if rid not in records:
        records[rid] = Record()
    return records[rid]


def connection(port: int) -> Connection:
    if port not in connections:
        connections[port] = Connection()
    return connections[port]


class TrackedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, recording when each connection opens and closes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None:
            port = self.client[1]
            connections[port] = Connection()
            connections[port].events["made"].set()

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        super().connection_lost(exc)
        if client is not None:
            connection(client[1]).events["lost"].set()


class _RecordAborted(logging.Handler):
    """Sets the ``logged`` event of the request whose path ends with the id."""

    def emit(self, log: logging.LogRecord) -> None:
        path = str(getattr(log, "http_path", ""))
        rec = records.get(path.rstrip("/").rsplit("/", 1)[-1])
        if rec is not None:
            rec.log_lines.append(log.getMessage())
            rec.events["logged"].set()


_stderr = logging.StreamHandler(sys.stderr)
_stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
logging.getLogger().addHandler(_stderr)
logging.getLogger().setLevel(logging.WARNING)
_abort_logger = logging.getLogger("fastapi_abort")
_abort_logger.setLevel(logging.INFO)
_abort_logger.addHandler(_RecordAborted())

app = FastAPI()
install(app)


def _watch(rid: str, request: Request, ct: CancellationToken) -> Record:
    rec = record(rid)
    if request.client is not None:
        rec.upstream_port = request.client.port
    rec.http_version = request.scope["http_version"]
    rec.headers = dict(request.headers)

    def tripped() -> None:
        # First thing: the time the detection delay is measured to.
        rec.tripped_ns = time.monotonic_ns()
        rec.reason = str(ct.reason)
        rec.events["tripped"].set()

    ct.register(tripped)
    return rec


async def _hold(rec: Record, ct: CancellationToken) -> None:
    """Until the token trips (OperationCancelled) or the test releases the request."""
    rec.events["started"].set()
    try:
        with ct.scope(), anyio.move_on_after(HOLD_SECONDS):
            await rec.events["released"].wait()
    finally:
        rec.events["finished"].set()


@app.get("/ping")
async def ping() -> str:
    return "pong"


@app.get("/hold/{rid}")
async def hold(rid: str, request: Request, ct: RequestAborted) -> dict[str, str]:
    await _hold(_watch(rid, request, ct), ct)
    return {"rid": rid}


@app.post("/upload/{rid}")
async def upload(rid: str, request: Request, ct: RequestAborted) -> dict[str, str]:
    rec = _watch(rid, request, ct)
    rec.body_size = len(await request.body())
    await _hold(rec, ct)
    return {"rid": rid}


@app.post("/unread/{rid}")
async def unread(rid: str, request: Request, ct: RequestAborted) -> dict[str, str]:
    """Holds without ever reading the request body."""
    await _hold(_watch(rid, request, ct), ct)
    return {"rid": rid}


@app.get("/stream/{rid}")
async def stream(rid: str, request: Request, ct: RequestAborted) -> StreamingResponse:
    rec = _watch(rid, request, ct)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for i in range(600):
                ct.throw_if_cancellation_requested()
                yield f"data: {i}\n\n".encode()
                rec.events["started"].set()
                await anyio.sleep(0.05)
        finally:
            rec.events["finished"].set()

    return StreamingResponse(chunks(), media_type="text/event-stream")


@app.get("/quick/{rid}")
async def quick(
    rid: str, request: Request, ct: RequestAborted, tasks: BackgroundTasks
) -> dict[str, str]:
    rec = _watch(rid, request, ct)

    def after_response() -> None:
        # Background tasks run after the response is complete: the token must be final.
        rec.can_be_cancelled_after_response = ct.can_be_cancelled
        rec.events["final"].set()

    tasks.add_task(after_response)
    return {"rid": rid}


@app.post("/release/{rid}")
async def release(rid: str) -> None:
    record(rid).events["released"].set()


async def _bounded_wait(event: asyncio.Event, timeout: float) -> None:
    with anyio.move_on_after(timeout):
        await event.wait()


@app.get("/await/{rid}/{what}")
async def await_event(rid: str, what: str, timeout: float = 10.0) -> dict[str, Any]:
    rec = record(rid)
    await _bounded_wait(rec.events[what], timeout)
    return {
        "happened": rec.events[what].is_set(),
        "reason": rec.reason,
        "tripped": rec.events["tripped"].is_set(),
        "tripped_ns": rec.tripped_ns,
        "finished": rec.events["finished"].is_set(),
        "upstream_port": rec.upstream_port,
        "http_version": rec.http_version,
        "headers": rec.headers,
        "body_size": rec.body_size,
        "can_be_cancelled_after_response": rec.can_be_cancelled_after_response,
        "log_lines": rec.log_lines,
    }


@app.get("/connection/{port}/{what}")
async def await_connection(port: int, what: str, timeout: float = 10.0) -> dict[str, bool]:
    conn = connection(port)
    await _bounded_wait(conn.events[what], timeout)
    return {name: event.is_set() for name, event in conn.events.items()}


def main(fd: int) -> None:
    config = uvicorn.Config(
        app,
        http=TrackedProtocol,
        loop="uvloop",
        log_level="info",
        timeout_keep_alive=TIMEOUT_KEEP_ALIVE,
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    main(int(sys.argv[1]))
