"""Edge paths of the library that the behaviour tests do not reach on their way.

Each test states the behaviour it pins; together with the other tests they keep line and branch
coverage of ``fastapi_abort`` at 100 %.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
import threading
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

import fastapi_abort._token as token_module
from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenSource,
    RequestAborted,
    RequestAbortedMiddleware,
    deadline,
    install,
    request_aborted,
)
from fastapi_abort._backend import NO_EVENT_LOOP, Spawned, call_soon_threadsafe
from fastapi_abort._config import BAD_DELAY
from fastapi_abort._inbox import READER_FAILED as WATCHER_FAILED
from fastapi_abort._state import SCOPE_KEY, RequestState
from tests.scripted import ScriptedServer, http_scope
from tests.test_websocket import WebSocketServer, serve, token_of

pytestmark = pytest.mark.anyio

WAIT = 10


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, True, "0"], ids=repr)
def test_a_bad_watcher_delay_is_refused_at_once(bad: Any) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(BAD_DELAY.format(value=bad))}$"):
        install(FastAPI(), watcher_delay=bad)


def test_a_client_disconnect_handler_of_the_app_is_kept() -> None:
    async def mine(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("mine")  # pragma: no cover - never called here

    app = FastAPI()
    app.add_exception_handler(ClientDisconnect, mine)
    install(app)
    assert app.exception_handlers[ClientDisconnect] is mine


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # through httpx's in-process transport
async def test_a_route_without_deadline_clears_a_deadline_on_an_existing_token(
    anyio_backend: str,
) -> None:
    app = FastAPI(dependencies=[Depends(request_aborted)])  # the token exists first
    install(app, deadline=0.01)

    @app.get("/long", dependencies=[Depends(deadline(None))])
    async def long(ct: RequestAborted) -> dict[str, bool]:
        await anyio.sleep(0.05)  # past the app-wide deadline
        return {"cancelled": ct.is_cancellation_requested}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with anyio.fail_after(WAIT):
            response = await client.get("/long")
    assert response.json() == {"cancelled": False}


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


@pytest.mark.parametrize(
    "ending",
    [
        [{"type": "http.response.pathsend", "path": "/etc/hostname"}],
        [{"type": "http.response.zerocopysend", "file": 0, "more_body": False}],
        [
            {"type": "http.response.zerocopysend", "file": 0, "more_body": True},
            {"type": "http.response.body", "body": b"", "more_body": False},
        ],
        [
            {"type": "http.response.body", "body": b"x", "more_body": False},
            {"type": "http.response.trailers", "headers": [], "more_trailers": True},
            {"type": "http.response.trailers", "headers": [], "more_trailers": False},
        ],
    ],
    ids=["pathsend", "zerocopysend", "zerocopysend-then-body", "trailers-in-two"],
)
async def test_every_way_to_end_a_response_makes_the_token_final(ending: list[Message]) -> None:
    finals: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        state: RequestState = scope[SCOPE_KEY]
        token = state.token()
        trailers = ending[-1]["type"] == "http.response.trailers"
        start: Message = {"type": "http.response.start", "status": 200, "headers": []}
        await send({**start, "trailers": True} if trailers else start)
        for message in ending:
            finals.append(token.can_be_cancelled)
            await send(message)
        finals.append(token.can_be_cancelled)

    server = ScriptedServer()
    await RequestAbortedMiddleware(app, watcher_delay=0)(http_scope(), server.receive, server.send)
    # Cancellable until the last message of the response, final from then on.
    assert finals == [True] * len(ending) + [False]


async def test_a_token_first_asked_for_after_the_response_is_final_at_once() -> None:
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        state: RequestState = scope[SCOPE_KEY]
        tokens.append(state.token())  # a background task, say

    server = ScriptedServer()
    await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert tokens[0].can_be_cancelled is False


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


def test_without_trio_imported_a_thread_with_no_loop_is_told_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "trio", raising=False)
    with pytest.raises(RuntimeError) as caught:
        call_soon_threadsafe("CancellationToken.wait()")
    assert str(caught.value) == NO_EVENT_LOOP.format(what="CancellationToken.wait()")


def test_a_spawned_handle_cancels_once() -> None:
    calls: list[str] = []
    spawned = Spawned(lambda: calls.append("cancel"))
    spawned.cancel()
    spawned.cancel()
    assert calls == ["cancel"]


def test_wait_blocking_sees_a_cancellation_that_lands_as_it_starts_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = CancellationTokenSource()

    def event_made_as_the_token_is_cancelled() -> threading.Event:
        source.cancel()  # between wait_blocking()'s first check and its lock
        return threading.Event()

    fake = SimpleNamespace(**vars(threading))
    fake.Event = event_made_as_the_token_is_cancelled
    monkeypatch.setattr(token_module, "threading", fake)
    # A wait that would block for the whole timeout if the cancellation were missed.
    assert source.token.wait_blocking(WAIT) is True


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the bare future is asyncio's
async def test_a_waiter_cancelled_before_its_wakeup_runs_is_left_alone(
    anyio_backend: str,
) -> None:
    source = CancellationTokenSource()
    task = asyncio.ensure_future(source.token.wait())
    await anyio.wait_all_tasks_blocked()
    # From another thread: the wakeup is scheduled on the loop, not run yet...
    thread = threading.Thread(target=source.cancel)
    thread.start()
    thread.join(WAIT)
    # ... and the waiter is cancelled before the loop gets to it.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await anyio.sleep(0)  # the wakeup runs now, and finds its waiter gone
    assert source.token.is_cancellation_requested


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


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the batch runs on asyncio's timers
async def test_a_watcher_batch_fires_each_item_when_its_own_delay_is_up(
    anyio_backend: str,
) -> None:
    from contextvars import Context

    from fastapi_abort._backend import call_after_delay

    fired: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    both = anyio.Event()

    class Item:
        def __init__(self, name: str) -> None:
            self.name = name
            self.added = loop.time()

        def delay_passed(self, context: Context) -> None:
            fired.append((self.name, loop.time() - self.added))
            if len(fired) == 2:
                both.set()

    delay = 0.05
    call_after_delay(Item("first"), delay)
    await anyio.sleep(delay / 2)
    # Not due when the first one's timer fires: the batch re-arms its timer for it.
    call_after_delay(Item("second"), delay)
    with anyio.fail_after(WAIT):
        await both.wait()
    assert [name for name, _ in fired] == ["first", "second"]
    assert all(waited >= delay - 0.002 for _, waited in fired)


def test_a_thread_without_an_event_loop_is_told_apart_with_or_without_trio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fastapi_abort._backend as backend

    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(backend.on_event_loop()))
    thread.start()
    thread.join()
    monkeypatch.setattr(backend, "_trio", lambda: None)
    thread = threading.Thread(target=lambda: seen.append(backend.on_event_loop()))
    thread.start()
    thread.join()
    assert seen == [False, False]


async def test_an_app_whose_stack_is_not_starlettes_keeps_its_own_outer_layer() -> None:
    # install() takes the place of Starlette's ServerErrorMiddleware only: an app that builds
    # another outer layer keeps it, inside the middleware.
    calls: list[str] = []

    class Outer:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            calls.append(scope["type"])
            await self.app(scope, receive, send)

    class OwnStack(FastAPI):
        def build_middleware_stack(self) -> Any:
            return Outer(super().build_middleware_stack())

    app = OwnStack()
    install(app)

    @app.get("/")
    async def root(ct: RequestAborted) -> str:
        return "ok" if not ct.is_cancellation_requested else "cancelled"

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.get("/")
    assert response.json() == "ok"
    assert calls == ["http"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_watcher_batches_of_two_delays_in_one_loop_stay_apart(anyio_backend: str) -> None:
    # Two middlewares with different watcher delays in one process: each delay keeps its own
    # batch, found again when the delays alternate.
    from contextvars import Context

    from fastapi_abort._backend import call_after_delay

    class Item:
        def delay_passed(self, context: Context) -> None:
            pass

    items = [Item(), Item(), Item()]
    first = call_after_delay(items[0], 0.011)
    other = call_after_delay(items[1], 0.012)
    again = call_after_delay(items[2], 0.011)
    assert first is not None
    assert other is not None
    assert again is first
    assert other is not first
    assert list(first.pending) == [items[0], items[2]]
    for batch, item in ((first, items[0]), (other, items[1]), (first, items[2])):
        batch.pending.pop(item, None)
