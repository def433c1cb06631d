"""The app that ``tests/test_nginx.py`` runs behind nginx, under uvicorn (``tests.serve``).

Like ``tests/server_app.py``, it records per request id what the request's token did, and tests
wait for those events through ``/await/{rid}/{what}`` (a bounded wait on the server side) instead
of sleeping (:mod:`tests.recording`). On top of that it records what only a proxy test needs:

* ``tripped_ns``, the moment the token tripped, on CLOCK_MONOTONIC: one clock for the whole
  machine, so the test subtracts its own reading taken just before it closed its socket to nginx:
  the detection delay through the proxy.
* The upstream connection each request came on (nginx's local port), and, through a uvicorn
  protocol subclass, when uvicorn saw that connection open and close
  (``/connection/{port}/{what}``): whether nginx reused a kept-alive upstream connection, and
  when it closed one.
* The request headers and HTTP version nginx forwarded.

Connections are recorded with asyncio events, since uvicorn's protocol callbacks run outside any
task (where an ``anyio.Event`` cannot be made).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import anyio
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fastapi_abort import CancellationToken, RequestAborted, install
from tests import recording
from tests.recording import Recorder, running, sse

CONNECTION_EVENTS = ("made", "lost")
#: The scope key with the port of the upstream connection a request came on.
PEER_PORT = "tests.peer_port"
#: How long an endpoint that holds waits at most, for its token or its release.
HOLD_SECONDS = 30.0


@dataclass
class Record(recording.Record):
    EVENTS = (*recording.COMMON_EVENTS, "final", "released")

    upstream_port: int | None = None
    http_version: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_size: int = 0
    can_be_cancelled_after_response: bool | None = None


@dataclass
class Connection:
    events: dict[str, asyncio.Event] = field(
        default_factory=lambda: {name: asyncio.Event() for name in CONNECTION_EVENTS}
    )


recorder = Recorder(Record)
recorder.install_logging()
#: The latest connection from each client port (a port can be used again for a new one).
connections: dict[int, Connection] = {}


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

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The proxy's own port, before uvicorn's proxy headers make the client the proxy's
        # client (Caddy sends X-Forwarded-For, and uvicorn trusts 127.0.0.1).
        if self.client is not None:
            self.scope[PEER_PORT] = self.client[1]  # type: ignore[literal-required]

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        super().connection_lost(exc)
        if client is not None:
            connection(client[1]).events["lost"].set()


app = FastAPI()
install(app)
recorder.serve_await(app)


def _watch(rid: str, request: Request, ct: CancellationToken) -> Record:
    rec = recorder.watch(rid, ct)
    rec.upstream_port = request.scope.get(PEER_PORT)
    rec.http_version = request.scope["http_version"]
    rec.headers = dict(request.headers)
    return rec


async def _hold(rec: Record, ct: CancellationToken) -> None:
    """Until the token trips (OperationCancelled) or the test releases the request."""
    with running(rec), ct.scope(), anyio.move_on_after(HOLD_SECONDS):
        await rec.events["released"].wait()


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
    return StreamingResponse(sse(_watch(rid, request, ct), ct), media_type="text/event-stream")


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
    recorder.record(rid).events["released"].set()


@app.get("/connection/{port}/{what}")
async def await_connection(port: int, what: str, timeout: float = 10.0) -> dict[str, bool]:
    conn = connection(port)
    with anyio.move_on_after(timeout):
        await conn.events[what].wait()
    return {name: event.is_set() for name, event in conn.events.items()}
