"""The app the shutdown tests run under real servers that are told to stop mid-request.

Every request carries an id and a number of seconds to hold (``?hold=``). The app reports what
happens to each request, out of band, as one JSON datagram per event to the UNIX socket named by
``$FASTAPI_ABORT_SHUTDOWN_EVENTS`` (:mod:`tests.events`): ``started``, ``tripped`` (with the
token's reason) and ``ended`` (with how: ``completed``, ``OperationCancelled`` or the name of the
cancellation exception the server delivered). The lifespan reports ``startup`` and ``shutdown``
under the id ``lifespan``. Events are stamped with ``time.monotonic_ns()`` (CLOCK_MONOTONIC: one
clock for every process on the machine) and the pid that served the request.

Why not the long-poll of ``tests/server_app.py``: once the server has been told to stop it
accepts no new connection, and a waiting long-poll would itself be an in-flight request that
holds the shutdown. A datagram reaches the test whatever the state of the server, from any of
its worker processes, and from a worker thread as well as from the event loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fastapi_abort import CancellationToken, OperationCancelled, RequestAborted, install
from tests.events import Emitter

#: Environment variable naming the UNIX datagram socket the events go to.
EVENTS_ENV = "FASTAPI_ABORT_SHUTDOWN_EVENTS"
#: Seconds between two steps of the ``def`` endpoint and of the streams.
STEP = 0.05
#: The id under which the lifespan reports.
LIFESPAN = "lifespan"

#: Report an event of a request, stamped now (see :mod:`tests.events`).
emit = Emitter(EVENTS_ENV)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    emit(LIFESPAN, "startup")
    yield
    emit(LIFESPAN, "shutdown")


app = FastAPI(lifespan=lifespan)
install(app)


def _watch(rid: str, ct: CancellationToken) -> None:
    ct.register(lambda: emit(rid, "tripped", reason=str(ct.reason)))


@contextmanager
def _reporting_end(rid: str) -> Iterator[None]:
    """Report how the code inside ended: returned, or raised what."""
    try:
        yield
    except OperationCancelled as exc:
        emit(rid, "ended", how="OperationCancelled", reason=str(exc.reason))
        raise
    except BaseException as exc:
        emit(rid, "ended", how=type(exc).__name__)
        raise
    emit(rid, "ended", how="completed")


@app.get("/async/{rid}")
async def hold_async(rid: str, ct: RequestAborted, hold: float = 30.0) -> dict[str, str]:
    _watch(rid, ct)
    emit(rid, "started")
    with _reporting_end(rid):
        await ct.sleep(hold)
    return {"rid": rid}


@app.get("/sync/{rid}")
def hold_sync(rid: str, ct: RequestAborted, hold: float = 30.0) -> dict[str, str]:
    _watch(rid, ct)
    emit(rid, "started")
    until = time.monotonic() + hold
    with _reporting_end(rid):
        while time.monotonic() < until:
            ct.throw_if_cancellation_requested()
            ct.wait_blocking(min(STEP, max(0.0, until - time.monotonic())))
    return {"rid": rid}


@app.get("/stream/{rid}")
async def stream(rid: str, ct: RequestAborted, hold: float = 30.0) -> StreamingResponse:
    _watch(rid, ct)

    async def chunks() -> AsyncIterator[bytes]:
        until = time.monotonic() + hold
        with _reporting_end(rid):
            yield b"first\n"
            emit(rid, "started")
            while time.monotonic() < until:
                ct.throw_if_cancellation_requested()
                await anyio.sleep(STEP)
                yield b"more\n"

    return StreamingResponse(chunks(), media_type="text/plain")
