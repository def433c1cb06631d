"""The inbox: the server's receive, shared by the app and the watcher (scripted servers)."""

from __future__ import annotations

import logging

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    RequestAbortedMiddleware,
)
from fastapi_abort._inbox import READER_FAILED as WATCHER_FAILED
from fastapi_abort._state import SCOPE_KEY, RequestState
from tests.scripted import ScriptedServer, http_scope
from tests.support import WAIT, WebSocketServer, respond, serve, token_of, watched

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("token", [False, True])
async def test_what_the_servers_receive_raised_the_apps_receive_raises_too(token: bool) -> None:
    # As without the middleware: the app's own call would have raised it (with a token, the
    # reader's call raised it, and every later receive() raises it too).
    seen: list[str] = []

    async def broken_receive() -> Message:
        raise OSError("the server broke")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if token:
            scope[SCOPE_KEY].token()
        for _ in range(2):
            with pytest.raises(OSError, match="the server broke"):
                await receive()
            seen.append("raised")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    server = ScriptedServer()
    with anyio.fail_after(WAIT):
        await RequestAbortedMiddleware(app)(http_scope(), broken_receive, server.send)
    assert seen == ["raised", "raised"]


class FailingSends(WebSocketServer):
    """A WebSocket server whose sends of data fail, as ASGI 2.4 servers' do once the peer left."""

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.send":
            raise OSError("closed")
        await super().send(message)


async def test_a_failed_websocket_send_without_a_token_still_tells_the_app_the_peer_left() -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        with pytest.raises(OSError, match="closed"):
            await send({"type": "websocket.send", "text": "hi"})
        received.append(await receive())
        state: RequestState = scope[SCOPE_KEY]
        assert state.aborted

    await serve(app, FailingSends())
    assert received == [{"type": "websocket.disconnect", "code": 1006}]


async def test_a_websocket_send_that_fails_after_the_close_is_no_departure() -> None:
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        state: RequestState = scope[SCOPE_KEY]
        tokens.append(state.token())
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        with pytest.raises(OSError, match="closed"):
            await send({"type": "websocket.send", "text": "too late"})
        assert not state.aborted

    await serve(app, FailingSends())
    assert not tokens[0].is_cancellation_requested


async def test_a_token_asked_for_while_the_app_reads_waits_for_that_read_then_watches() -> None:
    # Without a token the app reads the server's receive itself; the watcher the token starts
    # must not call it at the same time, and the disconnect that read returns trips the token.
    server = ScriptedServer()
    tokens: list[CancellationToken] = []
    got: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        state: RequestState = scope[SCOPE_KEY]

        async def read() -> None:
            got.append(await receive())

        async with anyio.create_task_group() as group:
            group.start_soon(read)
            await server.read.wait()  # the app's own call waits in the server's receive
            tokens.append(state.token())
            await anyio.wait_all_tasks_blocked()
            assert server.receive_calls == 1  # the watcher waits for the app's call
            server.disconnect()

    with anyio.fail_after(WAIT):
        await RequestAbortedMiddleware(app, watcher_delay=0)(
            http_scope(), server.receive, server.send
        )
    assert got == [{"type": "http.disconnect"}]
    assert tokens[0].is_cancellation_requested


async def test_a_client_that_leaves_after_the_deadline_tripped_the_token_changes_nothing() -> None:
    server = ScriptedServer()
    tokens: list[CancellationToken] = []
    got: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        state: RequestState = scope[SCOPE_KEY]
        state.set_deadline(0.01)
        token = state.token()
        tokens.append(token)
        await token.wait()  # the deadline
        server.disconnect()
        got.append(await receive())

    with anyio.fail_after(WAIT):
        await RequestAbortedMiddleware(app, watcher_delay=0)(
            http_scope(), server.receive, server.send
        )
    assert got == [{"type": "http.disconnect"}]
    assert tokens[0].reason is CancellationReason.DEADLINE


async def test_a_watcher_whose_server_receive_raises_stops_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "fastapi_abort")
    done = anyio.Event()

    async def broken_receive() -> Message:
        raise OSError("the server broke")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        state: RequestState = scope[SCOPE_KEY]
        state.token()
        with anyio.fail_after(WAIT):
            while not any(r.getMessage() == WATCHER_FAILED for r in caplog.records):
                await anyio.sleep(0)  # a checkpoint per round: lets the watcher run
        done.set()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    server = ScriptedServer()
    await RequestAbortedMiddleware(app, watcher_delay=0)(http_scope(), broken_receive, server.send)
    assert done.is_set()
    (failure,) = [r for r in caplog.records if r.getMessage() == WATCHER_FAILED]
    assert failure.exc_info is not None


async def test_a_disconnect_the_app_waited_for_mid_response_reaches_it_before_the_token() -> None:
    # As Starlette's StreamingResponse listens for the disconnect while it streams: the app's
    # receive() gets the message first, and the token's waiters wake a few turns of the loop
    # later (so that the app's own reaction, a cancelled stream, comes first).
    server = ScriptedServer()
    order: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token: CancellationToken = scope[SCOPE_KEY].token()
        await send({"type": "http.response.start", "status": 200, "headers": []})

        async def listen() -> None:
            await receive()
            order.append("app heard it")

        async def wait() -> None:
            await token.wait()
            order.append("token's waiter woke")

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            group.start_soon(listen)
            await anyio.wait_all_tasks_blocked()
            server.disconnect()

    with anyio.fail_after(WAIT):
        await RequestAbortedMiddleware(app, watcher_delay=0)(
            http_scope(), server.receive, server.send
        )
    assert order == ["app heard it", "token's waiter woke"]


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


class _SilentServer(ScriptedServer):
    """Reports nothing when the response is complete: its receive() just keeps waiting."""

    async def send(self, message: Message) -> None:
        self.sent.append(message)


class _SlowToReturnServer(ScriptedServer):
    """Reports the disconnect of a complete response, and lets everyone run, before its
    send of the last message returns (hypercorn does the first)."""

    async def send(self, message: Message) -> None:
        await super().send(message)
        await wait_all_tasks_blocked()


@pytest.mark.parametrize(
    "make", [_SilentServer, _SlowToReturnServer], ids=lambda make: make.__name__
)
async def test_a_receive_waiting_when_the_response_completes_gets_the_disconnect_before_a_cancel(
    make: type[ScriptedServer],
) -> None:
    # Starlette's StreamingResponse cancels its disconnect listener right after its last send
    # returns; every server answers that listener http.disconnect first (an OpenTelemetry
    # middleware inside ours records that message), and so must a token's reader.
    heard: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token_of(scope)  # the reader serves the app's reads from now on
        assert (await receive())["type"] == "http.request"

        async def listen() -> None:
            heard.append(await receive())

        async with anyio.create_task_group() as group:
            group.start_soon(listen)
            await wait_all_tasks_blocked()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})
            group.cancel_scope.cancel()

    server = make()
    server.push_body(b"")
    with anyio.fail_after(WAIT):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert heard == [{"type": "http.disconnect"}]
