"""Request deadlines, the on_abort hook and the shutdown reason, in process on both backends.

A deadline needs no client that leaves, so httpx's in-process transport is enough for most of
these; the hook's client-left case and the server's cancellation use the scripted server.
Against real servers: tests/servers/test_features.py.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    AbortedRequest,
    CancellationReason,
    CancellationToken,
    OperationCancelled,
    RequestAborted,
    RequestAbortedMiddleware,
    deadline,
    install,
    request_aborted,
)
from fastapi_abort._config import BAD_DEADLINE, BAD_HOOK
from fastapi_abort._endings import HOOK_FAILED
from tests.scripted import ScriptedServer, http_scope
from tests.support import WAIT

pytestmark = pytest.mark.anyio

DEADLINE = CancellationReason.DEADLINE
PROBLEM = {
    "type": "about:blank",
    "title": "Gateway Timeout",
    "status": 504,
    "detail": "The request did not complete within its 0.05 s deadline.",
}


BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


@pytest.fixture
def anyio_backend() -> str:
    # httpx's ASGITransport leaves an async generator unclosed on trio (a ResourceWarning):
    # the tests through it run on asyncio; the scripted ones run on both.
    return "asyncio"


async def get(app: FastAPI, path: str) -> httpx.Response:
    """One GET through httpx's in-process transport, bounded."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with anyio.fail_after(WAIT):
            return await http.get(path)


def deadline_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "fastapi_abort" and "504 Gateway Timeout" in r.getMessage()
    ]


async def test_an_app_wide_deadline_ends_a_cooperative_endpoint_with_a_problem_504(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[AbortedRequest] = []
    app = FastAPI()
    install(app, deadline=0.05, on_abort=seen.append)
    reasons: list[object] = []

    @app.get("/report")
    async def report(ct: RequestAborted) -> None:
        ct.register(lambda: reasons.append(ct.reason))
        await ct.sleep(WAIT)

    response = await get(app, "/report?secret=1")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == PROBLEM
    assert reasons == [DEADLINE]
    (record,) = deadline_lines(caplog)
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("GET /report: 504 Gateway Timeout: its 0.050 s deadline passed")
    assert "secret" not in message
    assert record.reason == "deadline"  # type: ignore[attr-defined]
    assert record.status_code == 504  # type: ignore[attr-defined]
    (aborted,) = seen
    assert (aborted.method, aborted.path, aborted.status_code, aborted.reason) == (
        "GET",
        "/report",
        504,
        DEADLINE,
    )
    assert aborted.elapsed >= 0.05
    assert not [r for r in caplog.records if "Client Closed Request" in r.getMessage()]


async def test_a_route_deadline_replaces_the_app_wide_one() -> None:
    app = FastAPI()
    install(app, deadline=WAIT)

    @app.get("/short", dependencies=[Depends(deadline(0.05))])
    async def short(ct: RequestAborted) -> None:
        await ct.sleep(WAIT)

    response = await get(app, "/short")
    assert response.status_code == 504
    assert response.json() == PROBLEM


async def test_a_route_deadline_of_none_removes_the_app_wide_one() -> None:
    app = FastAPI()
    install(app, deadline=0.01)

    @app.get("/long", dependencies=[Depends(deadline(None))])
    async def long(ct: RequestAborted) -> dict[str, Any]:
        # Several times the app-wide deadline: it would have tripped by now.
        await anyio.sleep(0.1)
        return {"cancelled": ct.is_cancellation_requested}

    response = await get(app, "/long")
    assert response.status_code == 200
    assert response.json() == {"cancelled": False}


async def test_a_route_deadline_applies_to_a_token_that_already_exists() -> None:
    # The app-wide dependency creates the token before the route's deadline runs.
    app = FastAPI(dependencies=[Depends(request_aborted)])
    install(app)

    @app.get("/short", dependencies=[Depends(deadline(0.05))])
    async def short(ct: RequestAborted) -> None:
        await ct.sleep(WAIT)

    response = await get(app, "/short")
    assert response.status_code == 504


async def test_a_deadline_counts_from_the_start_of_the_request() -> None:
    app = FastAPI()
    install(app)
    remaining: list[float] = []

    async def slow_first() -> None:
        await anyio.sleep(0.1)

    @app.get("/late", dependencies=[Depends(slow_first), Depends(deadline(0.05))])
    async def late(ct: RequestAborted) -> None:
        # The deadline passed while the first dependency ran: cancelled at once.
        remaining.append(0.0 if ct.is_cancellation_requested else math.inf)
        ct.throw_if_cancellation_requested()

    response = await get(app, "/late")
    assert response.status_code == 504
    assert remaining == [0.0]


async def test_a_deadline_cannot_change_once_the_token_is_cancelled() -> None:
    app = FastAPI()
    install(app, deadline=0.01)

    async def wait_for_it(ct: RequestAborted) -> None:
        await ct.wait()

    @app.get("/x", dependencies=[Depends(wait_for_it), Depends(deadline(WAIT))])
    async def x(ct: RequestAborted) -> dict[str, Any]:
        return {"reason": str(ct.reason)}

    response = await get(app, "/x")
    assert response.json() == {"reason": "deadline"}


async def test_a_deadline_handled_by_the_endpoint_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[AbortedRequest] = []
    app = FastAPI()
    install(app, deadline=0.02, on_abort=seen.append)

    @app.get("/partial")
    async def partial(ct: RequestAborted) -> dict[str, str]:
        try:
            await ct.sleep(WAIT)
        except OperationCancelled:
            return {"result": "partial"}
        raise AssertionError("unreachable")  # pragma: no cover

    response = await get(app, "/partial")
    assert response.json() == {"result": "partial"}
    assert deadline_lines(caplog) == []
    assert seen == []


async def test_a_deadline_never_trips_after_the_response_completed() -> None:
    app = FastAPI()
    install(app, deadline=0.02)
    tokens: list[CancellationToken] = []

    @app.get("/quick")
    async def quick(ct: RequestAborted) -> str:
        tokens.append(ct)
        return "ok"

    response = await get(app, "/quick")
    assert response.status_code == 200
    (token,) = tokens
    await anyio.sleep(0.05)  # past the deadline: a timer left running would have fired
    assert token.is_cancellation_requested is False
    assert token.can_be_cancelled is False


async def test_without_the_handler_the_middleware_answers_the_deadline_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    # By hand, without install(): no exception handler for OperationCancelled.
    app.add_middleware(RequestAbortedMiddleware, deadline=0.05)

    @app.get("/bare")
    async def bare(ct: RequestAborted) -> None:
        await ct.sleep(WAIT)

    response = await get(app, "/bare")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == PROBLEM
    assert len(deadline_lines(caplog)) == 1


async def test_a_deadline_after_the_response_started_cuts_the_response_short() -> None:
    app = FastAPI()
    install(app, deadline=0.05)

    @app.get("/stream")
    async def stream(ct: RequestAborted) -> StreamingResponse:
        async def chunks() -> Any:
            yield b"first"
            await ct.sleep(WAIT)
            yield b"never"  # pragma: no cover

        return StreamingResponse(chunks())

    # The server must see an error (so that the client sees a cut response, not a short one).
    with pytest.raises(Exception) as caught:  # noqa: PT011 - its shape depends on Starlette
        await get(app, "/stream")
    # Starlette 1.x: RuntimeError("Caught handled exception, but response already started.")
    # from it; 0.38: an ExceptionGroup of the streaming task group holding it.
    error: BaseException | None = caught.value
    while error is not None and not isinstance(error, OperationCancelled):
        inner = getattr(error, "exceptions", None)
        error = inner[0] if inner else error.__cause__
    assert isinstance(error, OperationCancelled), caught.value
    assert error.reason is DEADLINE


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "5"], ids=repr)
def test_a_bad_deadline_is_refused_at_once(bad: Any) -> None:
    message = f"^{re.escape(BAD_DEADLINE.format(value=bad))}$"
    with pytest.raises(ValueError, match=message):
        deadline(bad)
    with pytest.raises(ValueError, match=message):
        install(FastAPI(), deadline=bad)
    with pytest.raises(ValueError, match=message):
        RequestAbortedMiddleware(FastAPI(), deadline=bad)


def test_a_hook_that_is_not_callable_is_refused_at_once() -> None:
    with pytest.raises(TypeError) as caught:
        install(FastAPI(), on_abort="print")  # type: ignore[arg-type]
    assert str(caught.value) == BAD_HOOK.format(value="print")


@BOTH
async def test_the_hook_runs_once_when_the_client_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fastapi_abort")
    seen: list[AbortedRequest] = []
    started = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token: CancellationToken = scope["fastapi_abort.request"].token()
        started.set()
        await token.wait()
        token.throw_if_cancellation_requested()

    server = ScriptedServer()
    middleware = RequestAbortedMiddleware(app, watcher_delay=0, on_abort=seen.append)
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, http_scope("/draw"), server.receive, server.send)
        with anyio.fail_after(WAIT):
            await started.wait()
        server.disconnect()
    (aborted,) = seen
    assert (aborted.method, aborted.path, aborted.status_code) == ("GET", "/draw", 499)
    assert aborted.reason is CancellationReason.CLIENT_DISCONNECTED
    (record,) = [r for r in caplog.records if "Client Closed Request" in r.getMessage()]
    assert record.elapsed == aborted.elapsed  # type: ignore[attr-defined]


async def test_a_hook_that_raises_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(aborted: AbortedRequest) -> None:
        raise LookupError("no such metric")

    app = FastAPI()
    install(app, deadline=0.02, on_abort=broken)

    @app.get("/x")
    async def x(ct: RequestAborted) -> None:
        await ct.sleep(WAIT)

    response = await get(app, "/x")
    assert response.status_code == 504
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.getMessage() == HOOK_FAILED % (broken,)
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], LookupError)


@BOTH
async def test_a_request_the_server_cancels_trips_its_token_with_reason_shutdown() -> None:
    callbacks: list[object] = []
    started = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token: CancellationToken = scope["fastapi_abort.request"].token()
        token.register(lambda: callbacks.append(token.reason))
        started.set()
        await anyio.sleep(WAIT)

    server = ScriptedServer()
    middleware = RequestAbortedMiddleware(app, watcher_delay=0)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(middleware, http_scope("/slow"), server.receive, server.send)
            await started.wait()
            # What uvicorn and hypercorn do once their graceful shutdown timeout runs out.
            tg.cancel_scope.cancel()
    assert callbacks == [CancellationReason.SHUTDOWN]
    assert server.sent == []


@BOTH
async def test_a_request_cancelled_by_the_server_without_a_token_is_left_alone() -> None:
    started = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await anyio.sleep(WAIT)

    server = ScriptedServer()
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(RequestAbortedMiddleware(app), http_scope(), server.receive, server.send)
            await started.wait()
            tg.cancel_scope.cancel()
    assert server.sent == []


async def test_the_deadline_dependency_needs_the_middleware() -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(deadline(1))])
    async def x(request: Request) -> None:  # pragma: no cover - never reached
        pass

    with pytest.raises(RuntimeError, match="needs RequestAbortedMiddleware"):
        await get(app, "/x")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # through httpx's in-process transport
async def test_a_route_without_deadline_clears_a_deadline_on_an_existing_token(
    anyio_backend: str,
) -> None:
    app = FastAPI(dependencies=[Depends(request_aborted)])  # the token exists first
    # (Long enough for the dependencies to run first on a loaded machine: 10 ms was not.)
    install(app, deadline=0.3)

    @app.get("/long", dependencies=[Depends(deadline(None))])
    async def long(ct: RequestAborted) -> dict[str, object]:
        remaining = ct.time_remaining()
        await anyio.sleep(0.4)  # past the app-wide deadline
        return {"remaining": remaining, "cancelled": ct.is_cancellation_requested}

    response = await get(app, "/long")
    assert response.json() == {"remaining": None, "cancelled": False}
