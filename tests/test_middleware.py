"""Edge cases of the middleware, driven in process with a scripted server (both backends).

The behaviour users see is tested against real servers in test_servers.py; these tests pin the
cases a real server makes hard to arrange: single-delivery receive, disconnect reported before
the final send returns, Expect: 100-continue, bounded read-ahead, unread bodies.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    OperationCancelled,
    RequestAborted,
    RequestAbortedMiddleware,
    get_request_aborted,
    install,
)
from fastapi_abort._state import SCOPE_KEY, RequestState
from tests.scripted import ScriptedServer, http_scope

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio

RawApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def watched(app: RawApp) -> RequestAbortedMiddleware:
    """The middleware with a watcher that starts at once, so that its reads can be observed."""
    return RequestAbortedMiddleware(app, watcher_delay=0)


def token_of(scope: Scope) -> CancellationToken:
    state: RequestState = scope[SCOPE_KEY]
    return state.token()


async def respond(send: Send, status: int = 200, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def quiet_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Client Closed Request" in r.getMessage()]


def nothing_above_info(caplog: pytest.LogCaptureFixture) -> bool:
    return all(record.levelno <= logging.INFO for record in caplog.records)


async def test_disconnect_reported_for_a_completed_response_never_trips(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        tokens.append(token_of(scope))
        await respond(send)
        # The server now reports http.disconnect, as all of them do after a response.
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"

    server = ScriptedServer()
    server.push_body(b"")
    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert not tokens[0].is_cancellation_requested
    assert not tokens[0].can_be_cancelled
    assert quiet_lines(caplog) == []


async def test_every_reader_hears_the_disconnect_on_a_single_delivery_server() -> None:
    heard: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)

        async def reader(name: str) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            heard.append(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, "first")
            tg.start_soon(reader, "second")
            await token.wait()
            heard.append("token")

    server = ScriptedServer()
    server.push_body(b"")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watched(app), http_scope(), server.receive, server.send)
            await wait_all_tasks_blocked()
            server.disconnect()
    assert sorted(heard) == ["first", "second", "token"]


async def test_body_is_delivered_once_in_order_with_one_message_read_ahead() -> None:
    chunks = [b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 10]
    received: list[bytes] = []
    server = ScriptedServer()
    may_read = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token_of(scope)  # starts the watcher before the app reads anything
        await may_read.wait()
        more = True
        while more:
            message = await receive()
            received.append(message["body"])
            more = message["more_body"]
        await respond(send)

    for i, chunk in enumerate(chunks):
        server.push_body(chunk, more_body=i < len(chunks) - 1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watched(app), http_scope(), server.receive, server.send)
            await wait_all_tasks_blocked()
            # The watcher holds one message for the app and reads no further.
            assert server.receive_calls == 1
            may_read.set()
    assert received == chunks


async def test_final_body_is_delivered_before_a_disconnect_the_watcher_saw() -> None:
    messages: list[Message] = []
    server = ScriptedServer()
    may_read = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        await may_read.wait()
        assert token.is_cancellation_requested
        messages.append(await receive())
        messages.append(await receive())
        messages.append(await receive())

    server.push_body(b"all of it")
    server.disconnect()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watched(app), http_scope(), server.receive, server.send)
            await wait_all_tasks_blocked()
            may_read.set()
    assert messages == [
        {"type": "http.request", "body": b"all of it", "more_body": False},
        {"type": "http.disconnect"},
        {"type": "http.disconnect"},
    ]


async def test_expect_100_continue_is_not_read_before_the_app_reads() -> None:
    server = ScriptedServer()
    may_read = anyio.Event()
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        tokens.append(token_of(scope))
        await may_read.wait()
        assert (await receive())["body"] == b"payload"
        await tokens[0].wait()

    headers = [(b"host", b"x"), (b"expect", b"100-Continue")]
    server.push_body(b"payload")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            scope = http_scope(method="POST", headers=headers)
            tg.start_soon(watched(app), scope, server.receive, server.send)
            await wait_all_tasks_blocked()
            # A read now would make a real server send "100 Continue" on the app's behalf.
            assert server.receive_calls == 0
            may_read.set()
            await wait_all_tasks_blocked()
            server.disconnect()
    assert tokens[0].reason is CancellationReason.CLIENT_DISCONNECTED


async def test_unread_body_hides_the_disconnect_until_the_response_starts() -> None:
    server = ScriptedServer()
    observed: list[bool] = []
    may_respond = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        await may_respond.wait()
        observed.append(token.is_cancellation_requested)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        # Once the response has started, the unread body is discarded and the disconnect seen.
        await token.wait()
        observed.append(token.is_cancellation_requested)

    server.push_body(b"x" * 100, more_body=True)
    server.push_body(b"y" * 100, more_body=True)
    server.disconnect()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watched(app), http_scope(), server.receive, server.send)
            await wait_all_tasks_blocked()
            may_respond.set()
    assert observed == [False, True]


async def test_token_asked_for_after_the_app_heard_the_disconnect_is_born_cancelled() -> None:
    server = ScriptedServer()
    server.disconnect()
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.disconnect"
        tokens.append(token_of(scope))

    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert tokens[0].reason is CancellationReason.CLIENT_DISCONNECTED


async def test_token_asked_for_after_the_response_completed_is_final() -> None:
    server = ScriptedServer()
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send)
        tokens.append(token_of(scope))

    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert not tokens[0].can_be_cancelled
    assert server.receive_calls == 0  # no watcher was started for a finished response


async def test_response_with_trailers_completes_only_after_the_last_trailers() -> None:
    server = ScriptedServer()
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        tokens.append(token)
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})
        assert token.can_be_cancelled  # the trailers are still to come
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})

    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert not tokens[0].can_be_cancelled
    assert not tokens[0].is_cancellation_requested


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


@pytest.mark.parametrize("scope_type", ["lifespan", "webtransport"])
async def test_scopes_other_than_http_and_websocket_pass_through_untouched(
    scope_type: str,
) -> None:
    seen: list[tuple[Receive, Send, bool]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((receive, send, SCOPE_KEY in scope))

    async def receive() -> Message:
        raise AssertionError("would hang")

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    await RequestAbortedMiddleware(app)({"type": scope_type}, receive, send)
    assert seen == [(receive, send, False)]


async def test_an_inner_second_middleware_defers_to_the_outer_one() -> None:
    states: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        states.append(scope[SCOPE_KEY])
        await respond(send)

    server = ScriptedServer()
    outer = RequestAbortedMiddleware(RequestAbortedMiddleware(app))
    with anyio.fail_after(5):
        await outer(http_scope(), server.receive, server.send)
    assert len(states) == 1
    assert server.status() == 200


async def test_get_request_aborted_in_a_foreign_thread_says_what_to_do() -> None:
    from starlette.requests import Request

    from fastapi_abort._dependency import FOREIGN_THREAD

    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        import threading

        def in_thread() -> None:
            try:
                get_request_aborted(Request(scope))
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join(10)
        await respond(send)

    server = ScriptedServer()
    with anyio.fail_after(15):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert [str(e) for e in errors] == [FOREIGN_THREAD]


# asyncio only: on trio the watcher starts at once, there is no timer to cancel.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_request_that_ends_within_the_watcher_delay_never_starts_a_watcher() -> None:
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        tokens.append(token_of(scope))
        await wait_all_tasks_blocked()  # a watcher, had one started, would be reading now
        await respond(send)

    server = ScriptedServer()
    server.push_body(b"")
    middleware = RequestAbortedMiddleware(app, watcher_delay=60)
    with anyio.fail_after(5):
        await middleware(http_scope(), server.receive, server.send)
    assert server.receive_calls == 0
    assert not tokens[0].can_be_cancelled


async def test_the_watcher_starts_after_its_delay_and_hears_the_disconnect() -> None:
    server = ScriptedServer()
    server.push_body(b"")
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        tokens.append(token_of(scope))
        await tokens[0].wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(RequestAbortedMiddleware(app), http_scope(), server.receive, server.send)
            await server.read.wait()  # the watcher's first read, once its delay is up
            server.disconnect()
    assert tokens[0].reason is CancellationReason.CLIENT_DISCONNECTED


async def test_a_client_disconnect_from_starlettes_stream_ends_quietly(
    caplog: pytest.LogCaptureFixture,
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
    with anyio.fail_after(10):
        await app(http_scope("/upload", method="POST"), server.receive, server.send)
    assert received == [1000]
    assert server.status() == 499
    assert quiet_lines(caplog) == [quiet_lines(caplog)[0]]
    assert quiet_lines(caplog)[0].startswith("POST /upload: 499 Client Closed Request after ")
    assert nothing_above_info(caplog)


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


async def test_the_handler_lets_a_client_disconnect_through_while_the_client_is_there() -> None:
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


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the collector's count, one loop
@pytest.mark.parametrize("reads", [False, True])
async def test_a_finished_request_leaves_no_reference_cycle(
    anyio_backend: str, reads: bool
) -> None:
    # A cycle would leave every request to the cyclic garbage collector: the state and its
    # inbox refer to each other until the request ends.
    import gc

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token_of(scope)
        if reads:
            await receive()
        await respond(send)

    async def one() -> None:
        server = ScriptedServer()
        server.push_body(b"")
        await watched(app)(http_scope(), server.receive, server.send)
        del server

    await one()  # warm-up: the first request makes objects that live on
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            await one()
        await wait_all_tasks_blocked()  # the cancelled readers finish
        assert gc.collect() == 0
    finally:
        gc.enable()
