"""How a request ended, and what it leaves: the quiet 499 line, its level, status and message,
exceptions after the client left (scripted server, both backends)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import AsyncIterator

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    OperationCancelled,
    RequestAborted,
    RequestAbortedMiddleware,
    install,
)
from tests.scripted import ScriptedServer, http_scope
from tests.support import nothing_above_info, quiet_lines, token_of, watched

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


pytestmark = pytest.mark.anyio


async def test_operation_cancelled_escaping_a_started_stream_is_one_quiet_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install(app)

    @app.get("/stream")
    async def stream(ct: RequestAborted) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            await ct.wait()
            ct.throw_if_cancellation_requested()
            yield b"never"

        return StreamingResponse(chunks())

    server = ScriptedServer()
    caplog.set_level(logging.INFO)
    # ASGI 2.4: Starlette's StreamingResponse does not listen for the disconnect itself, so the
    # OperationCancelled escapes the body after the response started.
    scope = http_scope("/stream", spec_version="2.4")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, server.receive, server.send)
            await wait_all_tasks_blocked()
            server.disconnect()
    (line,) = quiet_lines(caplog)
    assert re.fullmatch(r"GET /stream: 499 Client Closed Request after \d+\.\d{3} s", line)
    assert nothing_above_info(caplog), caplog.text
    assert b"never" not in server.body()


async def test_client_abort_wrapped_in_an_exception_group_is_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        await token.wait()
        raise ExceptionGroup("from a task group", [OperationCancelled(token)])

    server = ScriptedServer()
    server.disconnect()
    caplog.set_level(logging.INFO)
    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope("/g"), server.receive, server.send)
    assert len(quiet_lines(caplog)) == 1
    assert server.status() == 499  # for the server's access log; nobody reads it


async def test_other_exceptions_after_the_client_left_still_propagate() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await token_of(scope).wait()
        raise ValueError("a bug")

    server = ScriptedServer()
    server.disconnect()
    with anyio.fail_after(5), pytest.raises(ValueError, match="a bug"):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)


async def test_quiet_line_has_no_query_string_and_escapes_control_characters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await token_of(scope).wait()

    server = ScriptedServer()
    server.disconnect()
    caplog.set_level(logging.INFO)
    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope("/a\nb"), server.receive, server.send)
    (line,) = quiet_lines(caplog)
    assert line.startswith("GET /a\\nb: 499 Client Closed Request after ")
    assert "secret" not in line
    (record,) = [r for r in caplog.records if "Client Closed Request" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert record.__dict__["http_path"] == "/a\\nb"
    assert record.__dict__["status_code"] == 499


async def test_status_level_and_message_are_configurable(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await token_of(scope).wait()
        raise OperationCancelled(token_of(scope))

    middleware = RequestAbortedMiddleware(app, status_code=444, log_level="DEBUG", message="Gone")
    server = ScriptedServer()
    server.disconnect()
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(5):
        await middleware(http_scope("/c"), server.receive, server.send)
    (record,) = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("GET /c: 444 Gone after ")
    assert server.status() == 444


async def test_a_client_disconnect_while_the_client_is_there_is_not_swallowed() -> None:
    from starlette.requests import ClientDisconnect

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ClientDisconnect  # nothing left: the middleware does not pretend it did

    server = ScriptedServer()
    with pytest.raises(ClientDisconnect):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)


async def test_a_client_disconnect_without_the_handler_ends_quietly_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.requests import ClientDisconnect

    caplog.set_level(logging.INFO, "fastapi_abort")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"
        raise ClientDisconnect  # as Starlette's request.stream() does

    server = ScriptedServer()
    server.push_body(b"part", more_body=True)
    server.disconnect()
    await watched(app)(http_scope("/up", method="POST"), server.receive, server.send)
    assert server.status() == 499
    assert len(quiet_lines(caplog)) == 1
