"""The app every column of the matrix serves: ``tests.matrix.app:app``.

Three FastAPI apps behind a path dispatcher, so that one server process can serve every row:

* ``/...``: ``install(app)``, the way users set it up;
* ``/bhm-inside/...``: the same plus a ``BaseHTTPMiddleware``, which ``install()`` puts inside
  ``RequestAbortedMiddleware``;
* ``/bhm-outside/...``: ``RequestAbortedMiddleware`` added by hand *inside* a
  ``BaseHTTPMiddleware`` (``install()`` would always put it outermost).

Each endpoint reports what its request's token did through :mod:`tests.matrix.events`:
``started`` once it holds, ``tripped`` from a callback registered on the token (the timestamp
the delays are measured to), ``finished`` when it ends (with how it ended, and whether the token
was cancelled by then), ``final`` from a background task that runs after the response.

An endpoint holds for ``hold`` seconds (a query parameter) and then returns normally: a cell
whose token never trips still ends, with a definite "not tripped" after a bounded time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.from_thread
from fastapi import BackgroundTasks, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    CancellationToken,
    OperationCancelled,
    RequestAborted,
    RequestAbortedMiddleware,
    install,
    operation_cancelled_handler,
)
from tests.matrix.events import emit

#: Seconds an endpoint holds when the test does not say.
HOLD = 3.0
#: Seconds between two chunks of a streaming response.
TICK = 0.05

BHM_INSIDE = "/bhm-inside"
BHM_OUTSIDE = "/bhm-outside"


def _watch(rid: str, ct: CancellationToken) -> None:
    def tripped() -> None:
        emit(rid, "tripped", reason=str(ct.reason))

    ct.register(tripped)


@contextmanager
def _finishing(rid: str, ct: CancellationToken) -> Iterator[dict[str, Any]]:
    """Report ``finished`` however the block ends; the block may add fields to the report."""
    report: dict[str, Any] = {"how": "returned"}
    try:
        yield report
    except OperationCancelled:
        report["how"] = "OperationCancelled"
        raise
    except BaseException as exc:  # the server cancelling the task: CancelledError, Cancelled
        report["how"] = type(exc).__name__
        raise
    finally:
        cancelled = ct.is_cancellation_requested
        reason = str(ct.reason) if cancelled else None
        emit(rid, "finished", tripped=cancelled, reason=reason, **report)


def _add_hold(app: FastAPI, prefix: str) -> None:
    @app.get(prefix + "/hold/{rid}")
    async def hold(rid: str, ct: RequestAborted, hold: float = HOLD) -> dict[str, str]:
        _watch(rid, ct)
        emit(rid, "started")
        with _finishing(rid, ct):
            await ct.sleep(hold)
        return {"rid": rid}


def _sse(
    rid: str, ct: CancellationToken, hold: float, polling: Request | None
) -> StreamingResponse:
    """A chunk every TICK for ``hold`` seconds. The token stops it; with ``polling``, so does
    ``Request.is_disconnected()``, polled before each chunk (and reported)."""

    async def chunks() -> AsyncIterator[bytes]:
        with _finishing(rid, ct) as report:
            if polling is not None:
                report["is_disconnected"] = False
            for i in range(int(hold / TICK)):
                if polling is not None and await polling.is_disconnected():
                    report["is_disconnected"] = True
                    return
                ct.throw_if_cancellation_requested()
                yield f"data: {i}\n\n".encode()
                if i == 0:
                    emit(rid, "started")
                await anyio.sleep(TICK)

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def _passthrough(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    return await call_next(request)


def _plain_app() -> FastAPI:
    app = FastAPI()
    install(app)
    _add_hold(app, "")

    @app.get("/hold-sync/{rid}")
    def hold_sync(rid: str, ct: RequestAborted, hold: float = HOLD) -> dict[str, str]:
        anyio.from_thread.run_sync(_watch, rid, ct)
        emit(rid, "started")
        with _finishing(rid, ct):
            ct.wait_blocking(hold)
            ct.throw_if_cancellation_requested()
        return {"rid": rid}

    @app.get("/stream/{rid}")
    async def stream(rid: str, ct: RequestAborted, hold: float = HOLD) -> StreamingResponse:
        _watch(rid, ct)
        return _sse(rid, ct, hold, None)

    @app.get("/poll-stream/{rid}")
    async def poll_stream(
        rid: str, request: Request, ct: RequestAborted, hold: float = HOLD
    ) -> StreamingResponse:
        _watch(rid, ct)
        return _sse(rid, ct, hold, request)

    @app.post("/upload/{rid}")
    async def upload(
        rid: str, request: Request, ct: RequestAborted, hold: float = HOLD
    ) -> dict[str, str]:
        _watch(rid, ct)
        body = await request.body()
        emit(rid, "started", body_size=len(body))
        with _finishing(rid, ct):
            await ct.sleep(hold)
        return {"rid": rid}

    @app.post("/unread/{rid}")
    async def unread(rid: str, ct: RequestAborted, hold: float = HOLD) -> dict[str, str]:
        # Never reads the body it was sent.
        _watch(rid, ct)
        emit(rid, "started")
        with _finishing(rid, ct):
            await ct.sleep(hold)
        return {"rid": rid}

    @app.get("/quick/{rid}")
    async def quick(rid: str, ct: RequestAborted, tasks: BackgroundTasks) -> dict[str, str]:
        _watch(rid, ct)

        def after_response() -> None:
            # Background tasks run after the response is complete: the token must be final.
            emit(
                rid,
                "final",
                can_be_cancelled=ct.can_be_cancelled,
                tripped=ct.is_cancellation_requested,
            )

        tasks.add_task(after_response)
        return {"rid": rid}

    return app


def _bhm_inside_app() -> FastAPI:
    app = FastAPI()
    install(app)
    app.add_middleware(BaseHTTPMiddleware, dispatch=_passthrough)
    _add_hold(app, BHM_INSIDE)
    return app


def _bhm_outside_app() -> FastAPI:
    app = FastAPI()
    # Starlette runs the middleware added last outermost: ours first, then the one around it.
    app.add_middleware(RequestAbortedMiddleware)
    app.add_middleware(BaseHTTPMiddleware, dispatch=_passthrough)
    app.add_exception_handler(OperationCancelled, operation_cancelled_handler)
    _add_hold(app, BHM_OUTSIDE)
    return app


_plain = _plain_app()
_inside = _bhm_inside_app()
_outside = _bhm_outside_app()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Route by path prefix; answer the lifespan protocol itself (no sub-app has a lifespan)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path: str = scope.get("path", "")
    if path.startswith(BHM_INSIDE + "/"):
        await _inside(scope, receive, send)
    elif path.startswith(BHM_OUTSIDE + "/"):
        await _outside(scope, receive, send)
    else:
        await _plain(scope, receive, send)
