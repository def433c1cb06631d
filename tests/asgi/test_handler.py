"""The exception handlers' answers: a deadline is a 504 problem logged at warning, a token of
the app's own a 500 logged as an error, Starlette's ClientDisconnect the quiet 499 once the
client left (and passed on while it is there).

The first two need no client that leaves: httpx's in-process transport is enough for them. The
ClientDisconnect ones run on the scripted server, on both backends.
"""

import logging
from collections.abc import Awaitable, Callable

import anyio
import pytest
from fastapi import FastAPI, Request

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenSource,
    install,
    request_aborted,
    stop_on_shutdown,
)
from tests.scripted import ScriptedServer, http_scope
from tests.support import WAIT, client, nothing_above_info, quiet_lines

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    # httpx's ASGITransport leaves an async generator unclosed on trio (a ResourceWarning).
    return "asyncio"


async def test_a_deadline_reaches_the_client_as_504_logged_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install(app)

    @app.get("/report")
    async def report() -> None:
        with CancellationTokenSource(timeout=0) as source:
            source.token.throw_if_cancellation_requested()

    async with client(app) as http:
        response = await http.get("/report")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Gateway Timeout",
        "status": 504,
        "detail": "The request did not complete within its deadline.",
    }
    (record,) = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "GET /report: 504 Gateway Timeout: The operation was cancelled (deadline)"
    )


@pytest.mark.parametrize("taken", [None, request_aborted, stop_on_shutdown])
@pytest.mark.parametrize("reason", ["stop button", CancellationReason.SHUTDOWN])
async def test_a_token_of_your_own_is_a_500_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
    taken: Callable[..., Awaitable[CancellationToken]] | None,
    reason: object,
) -> None:
    # Whichever token of fastapi-abort's the request took, and even for SHUTDOWN: only the
    # request's own tokens end it quietly, or with a 503.
    app = FastAPI()
    install(app, stopping=True)

    @app.get("/own")
    async def own(request: Request) -> None:
        if taken is not None:
            await taken(request)
        source = CancellationTokenSource()
        source.cancel(reason)
        source.token.throw_if_cancellation_requested()

    async with client(app) as http:
        response = await http.get("/own")
    assert response.status_code == 500
    (record,) = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert f"OperationCancelled ({reason}) escaped the endpoint" in record.getMessage()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # the scripted server
async def test_a_client_disconnect_from_starlettes_stream_ends_quietly(
    caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    caplog.set_level(logging.INFO, "fastapi_abort")
    app = FastAPI()
    install(app)
    received: list[int] = []

    @app.post("/upload")
    async def upload(request: Request) -> None:
        async for chunk in request.stream():  # raises ClientDisconnect when the client leaves
            received.append(len(chunk))

    server = ScriptedServer()
    server.push_body(b"x" * 1000, more_body=True)
    server.disconnect()
    with anyio.fail_after(WAIT):
        await app(http_scope("/upload", method="POST"), server.receive, server.send)
    assert received == [1000]
    assert server.status() == 499
    assert quiet_lines(caplog) == [quiet_lines(caplog)[0]]
    assert quiet_lines(caplog)[0].startswith("POST /upload: 499 Client Closed Request after ")
    assert nothing_above_info(caplog)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # the scripted server
async def test_the_handler_lets_a_client_disconnect_through_while_the_client_is_there(
    anyio_backend: str,
) -> None:
    from starlette.requests import ClientDisconnect

    app = FastAPI()
    install(app)

    @app.get("/odd")
    async def odd() -> None:
        raise ClientDisconnect

    server = ScriptedServer()
    server.push_body(b"")
    with pytest.raises(ClientDisconnect):
        await app(http_scope("/odd"), server.receive, server.send)
    assert server.status() == 500
