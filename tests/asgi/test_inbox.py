"""The inbox: the server's receive, shared by the app and the watcher (scripted servers)."""

from __future__ import annotations

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import CancellationToken, RequestAbortedMiddleware
from fastapi_abort._state import SCOPE_KEY, RequestState
from tests.scripted import ScriptedServer, http_scope
from tests.test_websocket import WebSocketServer, serve

WAIT = 5

pytestmark = pytest.mark.anyio


async def test_what_the_servers_receive_raised_the_apps_receive_raises_too() -> None:
    # As without the middleware: the app's own call would have raised it.
    seen: list[str] = []

    async def broken_receive() -> Message:
        raise OSError("the server broke")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(2):  # and on every call after
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
