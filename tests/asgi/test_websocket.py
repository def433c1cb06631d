"""The token of a WebSocket connection: it trips when the peer leaves before the app closed.

In process, with a scripted server that hands each message to exactly one caller, on both
backends. Against real servers: tests/servers/test_features.py.
"""

from __future__ import annotations

import logging

import anyio
import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelled,
    RequestAborted,
    deadline,
    install,
)
from tests.support import WAIT, WebSocketServer, serve, token_of, ws_scope

pytestmark = pytest.mark.anyio


async def test_the_token_trips_when_the_peer_leaves_while_the_app_is_busy() -> None:
    server = WebSocketServer()
    reasons: list[object] = []
    busy = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        token = token_of(scope)
        busy.set()
        await token.wait()  # pushing data, say: not reading
        reasons.append(token.reason)
        # The app still gets the disconnect, with its code, from its own receive.
        assert await receive() == {"type": "websocket.disconnect", "code": 1001}
        assert await receive() == {"type": "websocket.disconnect", "code": 1001}

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, app, server)
        with anyio.fail_after(WAIT):
            await busy.wait()
        server.leave()
    assert reasons == [CancellationReason.CLIENT_DISCONNECTED]


async def test_messages_reach_the_app_once_and_in_order_while_it_is_watched() -> None:
    server = WebSocketServer()
    received: list[Message] = []
    got_token = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        token = token_of(scope)
        got_token.set()
        await anyio.wait_all_tasks_blocked()
        while True:
            message = await receive()
            received.append(message)
            if message["type"] == "websocket.disconnect":
                break
        assert token.reason is CancellationReason.CLIENT_DISCONNECTED

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, app, server)
        with anyio.fail_after(WAIT):
            await got_token.wait()
        for text in ("one", "two", "three"):
            server.text(text)
        server.leave(1000)
    assert [m.get("text") for m in received] == ["one", "two", "three", None]
    assert received[-1] == {"type": "websocket.disconnect", "code": 1000}


async def test_the_watcher_holds_one_message_and_reads_no_further() -> None:
    server = WebSocketServer()
    done = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        token_of(scope)
        await done.wait()
        assert (await receive())["text"] == "one"
        assert (await receive())["text"] == "two"
        await send({"type": "websocket.close", "code": 1000})

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, app, server)
        server.text("one")
        server.text("two")
        with anyio.fail_after(WAIT):
            await anyio.wait_all_tasks_blocked()
        # connect, the app's read, and one read by the watcher: "two" is still the server's.
        assert server.receive_calls == 2
        done.set()


async def test_a_peer_that_leaves_after_the_app_closed_never_trips() -> None:
    server = WebSocketServer()
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        tokens.append(token_of(scope))
        await send({"type": "websocket.close", "code": 1000})
        server.leave(1000)  # the peer's answer to the close
        assert (await receive())["type"] == "websocket.disconnect"

    await serve(app, server)
    (token,) = tokens
    assert token.is_cancellation_requested is False
    assert token.can_be_cancelled is False


async def test_a_send_that_fails_because_the_peer_left_trips_the_token() -> None:
    tokens: list[CancellationToken] = []

    class GoneServer(WebSocketServer):
        async def send(self, message: Message) -> None:
            if message["type"] == "websocket.send":
                raise OSError("the peer is gone")  # what ASGI 2.4 servers do
            await super().send(message)

    server = GoneServer()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        tokens.append(token_of(scope))
        with pytest.raises(OSError, match="the peer is gone"):
            await send({"type": "websocket.send", "text": "hello?"})
        assert (await receive()) == {"type": "websocket.disconnect", "code": 1006}

    await serve(app, server)
    assert tokens[0].reason is CancellationReason.CLIENT_DISCONNECTED


async def test_a_fastapi_websocket_endpoint_gets_the_token_and_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "fastapi_abort")
    app = FastAPI()
    install(app)
    streaming = anyio.Event()
    tokens: list[CancellationToken] = []

    @app.websocket("/ticks")
    async def ticks(websocket: WebSocket, ct: RequestAborted, again: RequestAborted) -> None:
        tokens.extend((ct, again))
        await websocket.accept()
        streaming.set()
        while True:
            ct.throw_if_cancellation_requested()
            await websocket.send_text("tick")
            await ct.sleep(0.01)

    server = WebSocketServer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, ws_scope("/ticks"), server.receive, server.send)
        with anyio.fail_after(WAIT):
            await streaming.wait()
        server.leave()
    assert tokens[0] is tokens[1]
    assert tokens[0].reason is CancellationReason.CLIENT_DISCONNECTED
    assert [r for r in caplog.records if r.name == "fastapi_abort"] == []
    assert server.sent[0] == {"type": "websocket.accept", "subprotocol": None, "headers": []}


async def test_a_websocket_deadline_closes_the_connection_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install(app, deadline=0.01)  # HTTP only: a WebSocket session is long by nature

    @app.websocket("/session", dependencies=[Depends(deadline(0.05))])
    async def session(websocket: WebSocket, ct: RequestAborted) -> None:
        await websocket.accept()
        await ct.sleep(WAIT)

    server = WebSocketServer()
    with anyio.fail_after(WAIT):
        await app(ws_scope("/session"), server.receive, server.send)
    assert server.sent[-1] == {"type": "websocket.close", "code": 1011, "reason": "deadline"}
    (record,) = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        "WEBSOCKET /session: 504 Gateway Timeout: its 0.050 s deadline passed"
    )


async def test_another_tokens_cancellation_in_a_websocket_closes_it_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:

    app = FastAPI()
    install(app)

    @app.websocket("/mine")
    async def mine(websocket: WebSocket) -> None:
        await websocket.accept()
        with CancellationTokenSource() as source:
            source.cancel()
            source.token.throw_if_cancellation_requested()

    server = WebSocketServer()
    with anyio.fail_after(WAIT):
        await app(ws_scope("/mine"), server.receive, server.send)
    assert server.sent[-1] == {"type": "websocket.close", "code": 1011, "reason": ""}
    (record,) = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert record.levelno == logging.ERROR
    assert isinstance(record.exc_info and record.exc_info[1], OperationCancelled)


@pytest.mark.parametrize("escaping", ["OSError", "WebSocketDisconnect"])
async def test_a_send_that_raced_the_peers_leaving_ends_quietly(escaping: str) -> None:
    from starlette.websockets import WebSocketDisconnect

    class GoneServer(WebSocketServer):
        async def send(self, message: Message) -> None:
            if message["type"] == "websocket.send":
                raise OSError("the peer is gone")
            await super().send(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        token_of(scope)
        try:
            await send({"type": "websocket.send", "text": "tick"})
        except OSError:
            if escaping == "WebSocketDisconnect":
                raise WebSocketDisconnect(1006) from None  # what Starlette's WebSocket does
            raise

    await serve(app, GoneServer())  # nothing escapes


async def test_an_error_from_send_while_the_peer_is_there_is_not_swallowed() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        token_of(scope)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await serve(app, WebSocketServer())


async def test_a_websocket_send_that_fails_after_the_disconnect_was_heard_reraises() -> None:
    tokens: list[CancellationToken] = []

    class ClosedServer(WebSocketServer):
        async def send(self, message: Message) -> None:
            if message["type"] == "websocket.send":
                raise OSError("closed")
            await super().send(message)

    server = ClosedServer()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        tokens.append(token_of(scope))
        server.leave()
        assert (await receive())["type"] == "websocket.disconnect"  # heard first
        with pytest.raises(OSError, match="closed"):
            await send({"type": "websocket.send", "text": "late"})

    await serve(app, server)
    assert tokens[0].reason is CancellationReason.CLIENT_DISCONNECTED


async def test_a_websocket_peer_that_leaves_before_the_accept_ends_quietly() -> None:
    server = WebSocketServer()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        token = token_of(scope)
        server.leave()  # gone during the handshake: nothing to answer
        await token.wait()
        token.throw_if_cancellation_requested()

    await serve(app, server)
    assert server.sent == []
