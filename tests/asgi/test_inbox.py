"""The inbox: the server's receive, shared by the app and the watcher (scripted servers)."""

from __future__ import annotations

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import CancellationReason, CancellationToken, RequestAbortedMiddleware
from fastapi_abort._state import SCOPE_KEY, RequestState
from tests.scripted import ScriptedServer, http_scope
from tests.test_websocket import WebSocketServer, serve

WAIT = 5

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
