"""An app with endless event streams and slow finite requests, to be told to stop.

``install(app, stopping=True)`` unless ``FASTAPI_ABORT_STOPPING=0`` (then the streams take the
plain request token: nothing of the stopping token is installed). Run it with
``python -m tests.servers.stopping_app KIND FD [GRACEFUL]`` for the kinds served from Python
(see :func:`main`); granian runs it from its own command line.

Each request reports, through :mod:`tests.events`: ``started`` (with the SIGTERM handler in
place at that moment), and ``ended`` with how (``completed``, ``shutdown`` for a stream that
its token ended with SHUTDOWN and that sent its last event, or the exception's name: a long
poll's ``OperationCancelled``, answered with fastapi-abort's 503).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import StreamingResponse

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    OperationCancelled,
    RequestAborted,
    install,
    request_aborted,
    stop_on_shutdown,
)
from tests import EXAMPLES
from tests.events import Emitter
from tests.shutdown_serve import UVICORN, run_hypercorn, run_uvicorn, serve_signalled

APP = "tests.servers.stopping_app:app"
#: The environment variable naming the datagram socket the events go to.
EVENTS_ENV = "FASTAPI_ABORT_STOPPING_EVENTS"
#: ``0`` installs without ``stopping=True``.
STOPPING_ENV = "FASTAPI_ABORT_STOPPING"
#: Seconds between two events of a stream.
STEP = 0.05
LIFESPAN = "lifespan"
#: The close code of a WebSocket that the shutdown ended ("going away", RFC 6455).
GOING_AWAY = 1001
#: The stream's last event, once the server started to shut down.
LAST_EVENT = b"event: restart\nretry: 2000\ndata: server restarting\n\n"

emit = Emitter(EVENTS_ENV)
STOPPING = os.environ.get(STOPPING_ENV) != "0"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    emit(LIFESPAN, "startup")
    yield
    emit(LIFESPAN, "shutdown")


app = FastAPI(lifespan=lifespan)
install(app, stopping=STOPPING)
#: The streams' token: linked with the stopping token, or the request's own.
stream_token = Depends(stop_on_shutdown if STOPPING else request_aborted)


def _handler() -> str:
    handler = signal.getsignal(signal.SIGTERM)
    if isinstance(handler, signal.Handlers):
        return handler.name  # SIG_DFL, SIG_IGN
    return str(getattr(handler, "__qualname__", handler))


@contextmanager
def _reporting_end(rid: str) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        emit(rid, "ended", how=type(exc).__name__)
        raise
    emit(rid, "ended", how="completed")


@app.get("/slow/{rid}")
async def slow(rid: str, ct: RequestAborted, hold: float = 1.5) -> dict[str, str]:
    emit(rid, "started", handler=_handler())
    with _reporting_end(rid):
        await ct.sleep(hold)
    return {"rid": rid}


@app.get("/poll/{rid}")
async def poll(rid: str, hold: float = 1.5, ct: CancellationToken = stream_token) -> dict[str, str]:
    """A long poll that lets the shutdown's OperationCancelled escape: fastapi-abort's 503."""
    emit(rid, "started", handler=_handler())
    with _reporting_end(rid):
        await ct.sleep(hold)
    return {"rid": rid}


@app.get("/events/{rid}")
async def events(rid: str, ct: CancellationToken = stream_token) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            emit(rid, "started", handler=_handler())
            while True:
                await ct.sleep(STEP)
                yield b"data: more\n\n"
        except OperationCancelled:
            if ct.reason is not CancellationReason.SHUTDOWN:
                emit(rid, "ended", how=f"OperationCancelled {ct.reason}")
                raise
        except BaseException as exc:
            emit(rid, "ended", how=type(exc).__name__)
            raise
        yield LAST_EVENT
        emit(rid, "ended", how="shutdown")

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.websocket("/ws/{rid}")
async def ticker(websocket: WebSocket, rid: str, ct: CancellationToken = stream_token) -> None:
    await websocket.accept()
    await websocket.send_text("first")
    emit(rid, "started", handler=_handler())
    try:
        while True:
            await ct.sleep(STEP)
            await websocket.send_text("more")
    except OperationCancelled:
        if ct.reason is not CancellationReason.SHUTDOWN:
            emit(rid, "ended", how=f"OperationCancelled {ct.reason}")
            raise
    await websocket.close(GOING_AWAY, "server restarting")
    emit(rid, "ended", how="shutdown")


# -- serving from Python ------------------------------------------------------------------------

#: hypercorn's kinds: (worker class, worker processes). With 0 the process that gets the signal
#: serves (``hypercorn.run.run`` calls the worker in process); with 1 a main process gets it.
HYPERCORN = {"hypercorn-asyncio": ("asyncio", 0), "hypercorn-asyncio-workers": ("asyncio", 1)}


def main(argv: list[str]) -> Any:
    serve_signalled()
    kind, fd = argv[0], int(argv[1])
    graceful = float(argv[2]) if len(argv) > 2 else None
    if kind == "example":  # docs/examples/stopping.py, as `python stopping.py` serves it
        sys.path.insert(0, str(EXAMPLES))
        return run_uvicorn("uvicorn-h11", fd, graceful, importlib.import_module("stopping").app)
    if kind in UVICORN:
        return run_uvicorn(kind, fd, graceful, APP)
    worker_class, workers = HYPERCORN[kind]
    return run_hypercorn(worker_class, fd, graceful, APP, workers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
