"""Two services for the propagation tests: A calls B with httpx while its own client waits.

Each runs in its own process under ``tests.serve`` (targets ``tests.propagation_apps:a`` and
``:b``); A finds B through the environment variable ``PROPAGATION_UPSTREAM``.

Both services record, per request id, what happened to the request's token and when
(:mod:`tests.recording`: ``tripped_ns`` is on ``time.monotonic_ns()``, one clock for every process
of the machine), and serve ``/await/{rid}/{what}`` so that the tests wait for an event on the
server side instead of sleeping. The records add the client's port (B: the port of A's
connection), how A's call ended, and how many chunks A read of B's stream.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from fastapi_abort import RequestAborted, install
from fastapi_abort.httpx import TokenTransport
from tests import recording
from tests.recording import Recorder, running, sse


@dataclass
class Record(recording.Record):
    EVENTS = (*recording.COMMON_EVENTS, "streaming")

    client_port: int | None = None
    outcome: str | None = None
    chunks: int = 0


recorder = Recorder(Record)


def _watch(rid: str, ct: RequestAborted, request: Request) -> Record:
    rec = recorder.watch(rid, ct)
    rec.client_port = request.client.port if request.client else None
    return rec


def service_b() -> FastAPI:
    """The downstream service: holds on its token, streams, or answers at once."""
    app = FastAPI()
    install(app)
    recorder.serve_await(app)

    @app.get("/hold/{rid}")
    async def hold(rid: str, ct: RequestAborted, request: Request) -> dict[str, str]:
        with running(_watch(rid, ct, request)):
            await ct.sleep(30)
        return {"rid": rid}

    @app.get("/stream/{rid}")
    async def stream(rid: str, ct: RequestAborted, request: Request) -> StreamingResponse:
        rec = _watch(rid, ct, request)
        return StreamingResponse(sse(rec, ct), media_type="text/event-stream")

    @app.get("/ping/{rid}")
    async def ping(rid: str, ct: RequestAborted, request: Request) -> dict[str, Any]:
        rec = _watch(rid, ct, request)
        rec.events["finished"].set()
        return {"rid": rid, "client_port": rec.client_port}

    return app


def service_a(upstream: str) -> FastAPI:
    """The service in the middle: calls service B at ``upstream`` while its client waits.

    ``/call/scope/...`` uses one long-lived client inside ``ct.scope()``; ``/call/transport/...``
    and ``/call/stream/...`` use a client per request over one shared pool, bound with
    :class:`TokenTransport`.
    """
    pool = httpx.AsyncHTTPTransport()
    shared = httpx.AsyncClient(base_url=upstream, timeout=30)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with shared, pool:
            yield

    app = FastAPI(lifespan=lifespan)
    install(app)
    recorder.serve_await(app)

    def bound(ct: RequestAborted) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=TokenTransport(ct, pool), base_url=upstream, timeout=30)

    async def get_json(via: str, path: str, ct: RequestAborted) -> Any:
        if via == "scope":
            with ct.scope():
                return (await shared.get(path)).json()
        async with bound(ct) as client:
            return (await client.get(path)).json()

    async def read_stream(rid: str, ct: RequestAborted, rec: Record) -> Any:
        async with bound(ct) as client, client.stream("GET", f"/stream/{rid}") as reply:
            async for _ in reply.aiter_raw():
                rec.chunks += 1
                rec.events["streaming"].set()
        return {"chunks": rec.chunks}

    @app.get("/call/{how}/{rid}")
    async def call(
        how: Literal["scope", "transport", "stream"], rid: str, ct: RequestAborted, request: Request
    ) -> Any:
        rec = _watch(rid, ct, request)
        with running(rec):
            try:
                if how == "stream":
                    return await read_stream(rid, ct, rec)
                return await get_json(how, f"/hold/{rid}", ct)
            except BaseException as exc:
                rec.outcome = type(exc).__name__
                raise

    @app.get("/ping/{via}/{rid}")
    async def ping(via: Literal["scope", "transport"], rid: str, ct: RequestAborted) -> Any:
        return await get_json(via, f"/ping/{rid}", ct)

    return app


#: The environment variable that gives service A the address of service B.
UPSTREAM = "PROPAGATION_UPSTREAM"

recorder.install_logging()
#: Run with ``tests.serve``: ``tests.propagation_apps:b``, then ``tests.propagation_apps:a`` with
#: ``PROPAGATION_UPSTREAM=http://127.0.0.1:<port of b>`` in the environment.
b = service_b()
a = service_a(os.environ.get(UPSTREAM, "http://127.0.0.1:9"))
