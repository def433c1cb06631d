"""The stopping token: chained onto the server's signal handlers for the lifespan, in process.

The lifespan is driven by hand on the main thread, where signal handlers can be set, on asyncio
and trio; a signal is raised with ``signal.raise_signal``, whose Python handler runs before it
returns. ``tests/servers/test_stopping.py`` does the same against real servers.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import FrameType
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from starlette.types import Message, Scope

from fastapi_abort import (
    AbortedRequest,
    CancellationReason,
    CancellationToken,
    StopOnShutdown,
    install,
    stop_on_shutdown,
    stopping_token,
)
from fastapi_abort._config import BAD_STOPPING, NO_SIGNAL_HOOK, NOT_STOPPING
from fastapi_abort._endings import GOING_AWAY, SHUTDOWN_LOG, SHUTDOWN_RETRY_AFTER
from fastapi_abort._stopping import Stopping
from tests.scripted import ScriptedServer
from tests.support import callbacks_or_empty, ws_scope

SHUTDOWN = CancellationReason.SHUTDOWN
BOUND = 5.0


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan, from its startup to its shutdown, as a server drives it."""
    to_app, inbox = anyio.create_memory_object_stream[Message](2)
    outbox, from_app = anyio.create_memory_object_stream[Message](2)
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    with to_app, inbox, outbox, from_app:
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, inbox.receive, outbox.send)
            with anyio.fail_after(BOUND):
                await to_app.send({"type": "lifespan.startup"})
                assert (await from_app.receive())["type"] == "lifespan.startup.complete"
            yield
            with anyio.fail_after(BOUND):
                await to_app.send({"type": "lifespan.shutdown"})
                assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


class ServerHandler:
    """A server's own handler: records every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.calls.append(signum)


@contextmanager
def server_handlers(**handlers: Any) -> Iterator[None]:
    """Set SIGINT and SIGTERM as a server would, and put back what was there after."""
    saved = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGINT", "SIGTERM")}
    try:
        for name, handler in handlers.items():
            signal.signal(getattr(signal, name), handler)
        yield
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)


def stopping_app() -> FastAPI:
    app = FastAPI()
    install(app, stopping=True)
    return app


async def tripped(token: CancellationToken) -> None:
    with anyio.fail_after(BOUND):
        await token.wait()
    assert token.reason is SHUTDOWN


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
async def test_a_signal_trips_the_token_and_the_server_handler_still_runs_once(
    name: str,
) -> None:
    app = stopping_app()
    term, interrupt = ServerHandler(), ServerHandler()
    signum = getattr(signal, name)
    with server_handlers(SIGTERM=term, SIGINT=interrupt):
        token = stopping_token(app)
        async with served(app):
            assert signal.getsignal(signum) not in (term, interrupt)  # chained
            assert not token.is_cancellation_requested
            signal.raise_signal(signum)
            # Not cancelled in the handler itself: scheduled on the loop.
            assert not token.is_cancellation_requested
            await tripped(token)
            assert (term.calls, interrupt.calls) == (
                ([signum], []) if name == "SIGTERM" else ([], [signum])
            )
            signal.raise_signal(signum)  # a second signal: the server's handler again
            assert len(term.calls + interrupt.calls) == 2
        # The lifespan shutdown put the server's handlers back.
        assert signal.getsignal(signal.SIGTERM) is term
        assert signal.getsignal(signal.SIGINT) is interrupt


@pytest.mark.anyio
async def test_the_lifespan_shutdown_trips_the_token_when_no_signal_came() -> None:
    app = stopping_app()
    with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
        token = stopping_token(app)
        async with served(app):
            assert not token.is_cancellation_requested
        assert token.reason is SHUTDOWN


@pytest.mark.anyio
async def test_a_second_serving_gets_a_new_token() -> None:
    app = stopping_app()
    with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
        first = stopping_token(app)
        async with served(app):
            assert stopping_token(app) is first
        async with served(app):
            second = stopping_token(app)
            assert second is not first
            assert not second.is_cancellation_requested
        assert second.reason is SHUTDOWN


@pytest.mark.anyio
async def test_the_users_lifespan_runs_around_the_stopping_token() -> None:
    seen: list[object] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        seen.append("startup")
        yield {"answer": "42"}
        seen.append(stopping_token(app).reason)  # already tripped for the user's shutdown

    app = FastAPI(lifespan=lifespan)
    install(app, stopping=True)
    with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
        async with served(app):
            assert seen == ["startup"]
    assert seen == ["startup", SHUTDOWN]


@pytest.mark.anyio
async def test_a_signal_the_server_does_not_handle_here_is_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIG_DFL or SIG_IGN: the server handles it in another process (hypercorn's, gunicorn's
    or granian's main process), or not at all. Chaining would change what the signal does."""
    app = stopping_app()
    interrupt = ServerHandler()
    with server_handlers(SIGTERM=signal.SIG_DFL, SIGINT=interrupt):
        async with served(app):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            assert signal.getsignal(signal.SIGINT) is not interrupt
        assert signal.getsignal(signal.SIGINT) is interrupt
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.msg == NO_SIGNAL_HOOK
    assert record.getMessage() == NO_SIGNAL_HOOK % "SIGTERM"


@pytest.mark.anyio
async def test_our_handler_called_after_the_serving_ended_passes_the_signal_on() -> None:
    """Kept by someone who saved it (a second app chained onto it, say) and called later: the
    server's handler still runs, and the next serving's token does not trip."""
    app = stopping_app()
    term = ServerHandler()
    with server_handlers(SIGTERM=term, SIGINT=ServerHandler()):
        async with served(app):
            ours = signal.getsignal(signal.SIGTERM)
        assert callable(ours)
        async with served(app):
            ours(signal.SIGTERM, None)
            await anyio.sleep(0)
            assert not stopping_token(app).is_cancellation_requested
            assert term.calls == [signal.SIGTERM]


@pytest.mark.anyio
async def test_a_handler_set_over_ours_is_not_replaced_at_the_shutdown() -> None:
    app = stopping_app()
    later = ServerHandler()
    with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
        async with served(app):
            signal.signal(signal.SIGTERM, later)
        assert signal.getsignal(signal.SIGTERM) is later


def test_outside_the_main_thread_nothing_is_chained(caplog: pytest.LogCaptureFixture) -> None:
    """A loop in another thread (as Starlette's TestClient runs the app): signals cannot be set
    there."""
    app = stopping_app()
    before = signal.getsignal(signal.SIGTERM)
    token = stopping_token(app)
    seen: list[object] = []

    async def serve() -> None:
        async with served(app):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=anyio.run, args=(serve,))
    thread.start()
    thread.join(BOUND)
    assert seen == [before]
    assert token.reason is SHUTDOWN
    (record,) = caplog.records
    assert record.getMessage() == NO_SIGNAL_HOOK % "SIGINT and SIGTERM"


def test_without_stopping_nothing_is_wrapped() -> None:
    app = FastAPI()
    lifespan = app.router.lifespan_context
    install(app)
    assert app.router.lifespan_context is lifespan
    with pytest.raises(RuntimeError) as raised:
        stopping_token(app)
    assert str(raised.value) == NOT_STOPPING.format(app="FastAPI")


def test_stopping_must_be_a_bool() -> None:
    with pytest.raises(TypeError) as raised:
        install(FastAPI(), stopping=1)  # type: ignore[arg-type]
    assert str(raised.value) == BAD_STOPPING.format(value=1)


# -- stop_on_shutdown --------------------------------------------------------------------------


def linking_app(*, stopping: bool = True) -> tuple[FastAPI, list[CancellationToken]]:
    app = FastAPI()
    install(app, stopping=stopping)
    taken: list[CancellationToken] = []

    @app.get("/poll")
    async def poll(ct: StopOnShutdown) -> dict[str, str]:
        taken.append(ct)
        with anyio.fail_after(BOUND):
            await ct.wait()
        return {"reason": str(ct.reason)}

    @app.get("/now")
    async def now(ct: CancellationToken = Depends(stop_on_shutdown)) -> dict[str, bool]:
        taken.append(ct)
        return {"linked": ct is not stopping_token(app)}

    return app, taken


@pytest.mark.anyio
# On trio, httpx's ASGITransport leaves an async generator of a cancelled body to the GC.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_linked_token_trips_at_the_signal_and_keeps_no_registration(
    anyio_backend: str,
) -> None:
    app, taken = linking_app()
    transport = httpx.ASGITransport(app=app)
    with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
        async with served(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            stopping = stopping_token(app)
            async with anyio.create_task_group() as tg:

                async def poll() -> None:
                    response = await c.get("/poll")
                    assert response.json() == {"reason": "shutdown"}

                tg.start_soon(poll)
                with anyio.fail_after(BOUND):
                    while not taken:
                        await anyio.sleep(0)
                assert len(callbacks_or_empty(stopping)) == 1
                signal.raise_signal(signal.SIGTERM)
            assert taken[0].reason is SHUTDOWN
            # The request's end closed the link: nothing left on the app-wide token.
            assert callbacks_or_empty(stopping) == {}
            # A request that comes once the shutdown started gets a token tripped already.
            assert (await c.get("/now")).json() == {"linked": True}
            assert taken[1].reason is SHUTDOWN
            assert callbacks_or_empty(stopping) == {}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # httpx's ASGITransport, as above
async def test_a_stream_keeps_the_one_linked_token_after_its_endpoint_returned(
    anyio_backend: str,
) -> None:
    # FastAPI 0.115 runs the exit of a dependency with yield before a StreamingResponse is
    # sent: a link closed there would never trip for the stream's body.
    app = FastAPI()
    install(app, stopping=True)
    taken: list[CancellationToken] = []
    waiting = anyio.Event()

    @app.get("/events")
    async def events(
        ct: StopOnShutdown,
        again: CancellationToken = Depends(stop_on_shutdown, use_cache=False),
    ) -> StreamingResponse:
        taken.extend((ct, again))

        async def body() -> AsyncIterator[bytes]:
            waiting.set()
            with anyio.fail_after(BOUND):
                await ct.wait()
            yield str(ct.reason).encode()

        return StreamingResponse(body())

    transport = httpx.ASGITransport(app=app)
    with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
        async with served(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async with anyio.create_task_group() as tg:

                async def get() -> None:
                    assert (await c.get("/events")).text == "shutdown"

                tg.start_soon(get)
                with anyio.fail_after(BOUND):
                    await waiting.wait()
                signal.raise_signal(signal.SIGTERM)
            assert taken[0] is taken[1]  # every consumer of the request: one token
            assert callbacks_or_empty(stopping_token(app)) == {}


@pytest.mark.anyio
async def test_stop_on_shutdown_needs_stopping() -> None:
    app, _ = linking_app(stopping=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(RuntimeError) as raised:
            await client.get("/now")
    assert str(raised.value) == NOT_STOPPING.format(app="FastAPI")


@pytest.mark.anyio
async def test_two_apps_chained_in_one_process_restore_in_any_order() -> None:
    """Each app chains onto what it finds; the server's handler runs once per signal whatever
    order the lifespans end in."""
    first, second = stopping_app(), stopping_app()
    term = ServerHandler()
    calls = term.calls
    with server_handlers(SIGTERM=term, SIGINT=ServerHandler()):
        async with served(first), served(second):
            signal.raise_signal(signal.SIGTERM)
            await tripped(stopping_token(first))
            await tripped(stopping_token(second))
            assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is term
        # Lifespans that end out of order (two servers in one process): the Stopping of each
        # app, driven directly.
        outer, inner = Stopping(), Stopping()
        outer_serving, inner_serving = outer.serving(), inner.serving()
        outer_serving.__enter__()
        inner_serving.__enter__()
        outer_serving.__exit__(None, None, None)  # first ends first: second's handler stays
        assert outer.token.reason is SHUTDOWN
        signal.raise_signal(signal.SIGTERM)
        await tripped(inner.token)
        assert calls == [signal.SIGTERM] * 2
        inner_serving.__exit__(None, None, None)
        # second put back first's handler, which passes the signal on to the server's.
        signal.raise_signal(signal.SIGTERM)
        assert calls == [signal.SIGTERM] * 3


@pytest.mark.anyio
# On trio, httpx's ASGITransport leaves an async generator of a cancelled body to the GC.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_route_of_a_mounted_app_gets_the_installed_apps_token(anyio_backend: str) -> None:
    outer = stopping_app()
    inner = FastAPI()

    @inner.get("/now")
    async def now(ct: StopOnShutdown) -> dict[str, str]:
        return {"reason": str(ct.reason)}

    outer.mount("/inner", inner)
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/inner/now")).json() == {"reason": "None"}
        with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
            async with served(outer):
                signal.raise_signal(signal.SIGTERM)
                await tripped(stopping_token(outer))
                assert (await client.get("/inner/now")).json() == {"reason": "shutdown"}


def long_poll_app(aborted: list[AbortedRequest]) -> tuple[FastAPI, anyio.Event]:
    """A long poll and a WebSocket that let the shutdown's OperationCancelled escape."""
    app = FastAPI()
    install(app, stopping=True, on_abort=aborted.append)
    waiting = anyio.Event()

    @app.get("/poll")
    async def poll(ct: StopOnShutdown) -> dict[str, str]:
        waiting.set()
        await ct.sleep(2 * BOUND)  # raises OperationCancelled (SHUTDOWN) at the signal
        return {"never": "reached"}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, ct: StopOnShutdown) -> None:
        await websocket.accept()
        waiting.set()
        await ct.sleep(2 * BOUND)

    return app, waiting


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # httpx's ASGITransport, as above
async def test_a_long_poll_the_shutdown_ends_gets_a_503_to_retry_logged_at_info(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    aborted: list[AbortedRequest] = []
    app, waiting = long_poll_app(aborted)
    transport = httpx.ASGITransport(app=app)
    caplog.set_level(logging.INFO, logger="fastapi_abort")
    with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
        async with served(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            responses: list[httpx.Response] = []
            async with anyio.create_task_group() as tg:

                async def get() -> None:
                    responses.append(await c.get("/poll?secret=1"))

                tg.start_soon(get)
                with anyio.fail_after(BOUND):
                    await waiting.wait()
                signal.raise_signal(signal.SIGTERM)
    (response,) = responses
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(SHUTDOWN_RETRY_AFTER)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Service Unavailable"
    records = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert [(r.levelno, r.msg) for r in records] == [(logging.INFO, SHUTDOWN_LOG)]
    assert records[0].getMessage().startswith("GET /poll: 503 Service Unavailable: the server")
    (record,) = aborted
    assert (record.method, record.path, record.status_code) == ("GET", "/poll", 503)
    assert record.reason is SHUTDOWN
    assert not record.response_started  # fastapi-abort's own 503 is not counted


@pytest.mark.anyio
async def test_a_websocket_the_shutdown_ends_is_closed_as_going_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    aborted: list[AbortedRequest] = []
    app, waiting = long_poll_app(aborted)
    caplog.set_level(logging.INFO, logger="fastapi_abort")
    server = ScriptedServer()
    server.push({"type": "websocket.connect"})
    with server_handlers(SIGTERM=ServerHandler(), SIGINT=ServerHandler()):
        async with served(app), anyio.create_task_group() as tg:
            tg.start_soon(app, ws_scope(), server.receive, server.send)
            with anyio.fail_after(BOUND):
                await waiting.wait()
            signal.raise_signal(signal.SIGTERM)
    close = server.sent[-1]
    assert (close["type"], close["code"]) == ("websocket.close", GOING_AWAY)
    assert [r.msg for r in caplog.records if r.name == "fastapi_abort"] == [SHUTDOWN_LOG]
    assert aborted == []  # a WebSocket is never reported to the hook
