"""install() takes the place of Starlette's ServerErrorMiddleware: its work must not change.

Every case runs on a plain FastAPI app (Starlette's own ServerErrorMiddleware: the reference) and
on the same app with ``install(app)``, and the two must answer alike: the 500 response, the
handler for ``Exception`` (async and sync), the debug page, and the exception raised again for
the server to log. Only a client that left is different: it ends quietly, without the handler.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import Message

from fastapi_abort import RequestAborted, RequestAbortedMiddleware, install
from fastapi_abort.testing import AbortingClient, leave_after_chunks
from tests.scripted import http_scope
from tests.support import WAIT

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    # httpx's ASGITransport leaves an async generator unclosed on trio (a ResourceWarning).
    return "asyncio"


class Boom(Exception):
    pass


def build(installed: bool, handler: str | None = None, debug: bool = False) -> FastAPI:
    app = FastAPI(debug=debug)
    if installed:
        install(app)
    if handler == "async":

        @app.exception_handler(Exception)
        async def async_handler(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"handled": type(exc).__name__}, status_code=500)

    elif handler == "sync":

        @app.exception_handler(Exception)
        def sync_handler(request: Request, exc: Exception) -> PlainTextResponse:
            return PlainTextResponse(f"sync handled {type(exc).__name__}", status_code=503)

    @app.get("/boom")
    async def boom() -> None:
        raise Boom("kaput")

    @app.get("/late-boom")
    async def late_boom() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first "
            raise Boom("mid-stream")

        return StreamingResponse(body())

    return app


async def answer(app: FastAPI, path: str) -> tuple[list[Message], BaseException | None]:
    """Every message the app sent, and what it raised, driven straight through ASGI."""
    sent: list[Message] = []
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    try:
        await app(http_scope(path), receive, send)
    except Exception as exc:
        return sent, exc
    return sent, None


def leaf(exc: BaseException | None) -> BaseException | None:
    """The one exception inside groups of one: Starlette before 0.40 raised a streaming body's
    error out of its task group inside an ExceptionGroup (with or without fastapi-abort)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def summary(messages: list[Message]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for message in messages:
        if message["type"] == "http.response.start":
            headers = {k: v for k, v in message["headers"] if k != b"content-length"}
            out.append(("start", message["status"], headers.get(b"content-type")))
        else:
            out.append(("body", message.get("body", b"")[:40], message.get("more_body", False)))
    return out


@pytest.mark.parametrize("handler", [None, "async", "sync"])
@pytest.mark.parametrize("path", ["/boom", "/late-boom"])
async def test_an_escaping_error_is_answered_as_starlette_answers_it(
    handler: str | None, path: str
) -> None:
    plain_messages, plain_raised = await answer(build(False, handler), path)
    messages, raised = await answer(build(True, handler), path)
    assert summary(messages) == summary(plain_messages)
    assert type(raised) is type(plain_raised)
    assert isinstance(leaf(plain_raised), Boom)
    assert isinstance(leaf(raised), Boom)
    assert str(leaf(raised)) == str(leaf(plain_raised))


async def test_the_debug_page_is_starlettes() -> None:
    plain_messages, _ = await answer(build(False, debug=True), "/boom")
    messages, raised = await answer(build(True, debug=True), "/boom")
    assert isinstance(raised, Boom)
    assert summary(messages) == summary(plain_messages)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    assert b"kaput" in body
    assert messages[0]["status"] == 500


async def test_an_error_after_the_response_started_gets_no_second_start() -> None:
    messages, raised = await answer(build(True, "async"), "/late-boom")
    assert isinstance(leaf(raised), Boom)
    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200]


async def test_the_server_sees_the_error_as_without_fastapi_abort() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build(True)), base_url="http://test"
    ) as client:
        with pytest.raises(Boom, match="kaput"):
            await client.get("/boom")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build(True), raise_app_exceptions=False),
        base_url="http://test",
    ) as client:
        response = await client.get("/boom")
    assert (response.status_code, response.text) == (500, "Internal Server Error")


async def test_install_goes_right_inside_starlettes_error_middleware() -> None:
    # What tools that inspect the stack find (OpenTelemetry's instrument_app checks for
    # ServerErrorMiddleware at the top; FastAPI's telemetry walks `.app`).
    app = build(True)
    stack = app.build_middleware_stack()
    assert type(stack) is ServerErrorMiddleware
    assert isinstance(stack.app, RequestAbortedMiddleware)
    assert not isinstance(stack.app.app, RequestAbortedMiddleware | ServerErrorMiddleware)


async def test_added_by_hand_it_wraps_starlettes_error_middleware_unchanged() -> None:
    app = FastAPI()
    app.add_middleware(RequestAbortedMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        raise Boom("kaput")

    messages, raised = await answer(app, "/boom")
    assert isinstance(raised, Boom)
    assert summary(messages) == [
        ("start", 500, b"text/plain; charset=utf-8"),
        ("body", b"Internal Server Error", False),
    ]


async def test_a_client_that_left_ends_quietly_without_the_error_handler() -> None:
    app = FastAPI()
    install(app)
    handled: list[str] = []

    @app.exception_handler(Exception)
    async def handler(request: Request, exc: Exception) -> PlainTextResponse:
        handled.append(type(exc).__name__)
        return PlainTextResponse("handled", status_code=500)

    @app.get("/chat")
    async def chat(ct: RequestAborted) -> StreamingResponse:
        async def words() -> AsyncIterator[bytes]:
            yield b"one "
            await ct.sleep(WAIT)  # the reader leaves meanwhile
            yield b"never sent"

        return StreamingResponse(words(), media_type="text/plain")

    async with AbortingClient(app) as client:
        outcome = await client.get("/chat", leave=leave_after_chunks(1))
    assert outcome.token_tripped
    assert outcome.aborted_log is not None
    assert handled == []
