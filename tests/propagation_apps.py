"""Two services for the propagation tests: A calls B with httpx while its own client waits.

Each runs in its own process under ``tests.serve`` (targets ``tests.propagation_apps:a`` and
``:b``); A finds B through the environment variable ``PROPAGATION_UPSTREAM``.

Both services record, per request id, what happened to the request's token and when (on
``time.monotonic()``, which is one clock for every process of the machine), and expose
``/await/{rid}/{what}`` so that the tests wait for an event on the server side instead of
sleeping.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from fastapi_abort import RequestAborted, install
from fastapi_abort.httpx import TokenTransport

EVENTS = ("started", "streaming", "tripped", "finished", "logged")


@dataclass
class Record:
    events: dict[str, anyio.Event] = field(
        default_factory=lambda: {name: anyio.Event() for name in EVENTS}
    )
    reason: str | None = None
    tripped_at: float | None = None
    client_port: int | None = None
    outcome: str | None = None
    chunks: int = 0
    log_lines: list[str] = field(default_factory=list)


records: dict[str, Record] = {}


def record(rid: str) -> Record:
    # Runs on the event loop only (anyio.Event must be created there).
    if rid not in records:
        records[rid] = Record()
    return records[rid]


class _RecordAborted(logging.Handler):
    """Keeps the quiet line of the request whose path ends with the id, and sets ``logged``."""

    def emit(self, log: logging.LogRecord) -> None:
        rid = str(getattr(log, "http_path", "")).rstrip("/").rsplit("/", 1)[-1]
        rec = records.get(rid)
        if rec is not None:
            rec.log_lines.append(log.getMessage())
            rec.events["logged"].set()


def _set_up_logging() -> None:
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(stderr)
    logging.getLogger().setLevel(logging.WARNING)
    abort_logger = logging.getLogger("fastapi_abort")
    abort_logger.setLevel(logging.INFO)
    abort_logger.addHandler(_RecordAborted())


def _watch(rid: str, ct: RequestAborted, request: Request) -> Record:
    rec = record(rid)
    rec.client_port = request.client.port if request.client else None

    def tripped() -> None:
        rec.tripped_at = time.monotonic()
        rec.reason = str(ct.reason)
        rec.events["tripped"].set()

    ct.register(tripped)
    return rec


def _add_await(app: FastAPI) -> None:
    @app.get("/await/{rid}/{what}")
    async def await_event(rid: str, what: str, timeout: float = 10.0) -> dict[str, Any]:
        rec = record(rid)
        with anyio.move_on_after(timeout):
            await rec.events[what].wait()
        return {
            "happened": rec.events[what].is_set(),
            "reason": rec.reason,
            "tripped_at": rec.tripped_at,
            "tripped": rec.events["tripped"].is_set(),
            "finished": rec.events["finished"].is_set(),
            "client_port": rec.client_port,
            "outcome": rec.outcome,
            "chunks": rec.chunks,
            "log_lines": rec.log_lines,
        }


def service_b() -> FastAPI:
    """The downstream service: holds on its token, streams, or answers at once."""
    app = FastAPI()
    install(app)
    _add_await(app)

    @app.get("/hold/{rid}")
    async def hold(rid: str, ct: RequestAborted, request: Request) -> dict[str, str]:
        rec = _watch(rid, ct, request)
        rec.events["started"].set()
        try:
            await ct.sleep(30)
        finally:
            rec.events["finished"].set()
        return {"rid": rid}

    @app.get("/stream/{rid}")
    async def stream(rid: str, ct: RequestAborted, request: Request) -> StreamingResponse:
        rec = _watch(rid, ct, request)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                for i in range(600):
                    ct.throw_if_cancellation_requested()
                    yield f"chunk {i}\n".encode()
                    rec.events["started"].set()
                    await ct.sleep(0.05)
            finally:
                rec.events["finished"].set()

        return StreamingResponse(chunks(), media_type="text/plain")

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
    _add_await(app)

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
        rec.events["started"].set()
        try:
            if how == "stream":
                return await read_stream(rid, ct, rec)
            return await get_json(how, f"/hold/{rid}", ct)
        except BaseException as exc:
            rec.outcome = type(exc).__name__
            raise
        finally:
            rec.events["finished"].set()

    @app.get("/ping/{via}/{rid}")
    async def ping(via: Literal["scope", "transport"], rid: str, ct: RequestAborted) -> Any:
        return await get_json(via, f"/ping/{rid}", ct)

    return app


#: The environment variable that gives service A the address of service B.
UPSTREAM = "PROPAGATION_UPSTREAM"

_set_up_logging()
#: Run with ``tests.serve``: ``tests.propagation_apps:b``, then ``tests.propagation_apps:a`` with
#: ``PROPAGATION_UPSTREAM=http://127.0.0.1:<port of b>`` in the environment.
b = service_b()
a = service_a(os.environ.get(UPSTREAM, "http://127.0.0.1:9"))
