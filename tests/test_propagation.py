"""Cancellation across services: a client leaves A, and A's call to B is cancelled with it.

Two tiers. Unit tests of ``fastapi_abort.httpx.TokenTransport`` talk to a small upstream
server running in the test itself on 127.0.0.1 (so a closed connection is a real one), on
asyncio and trio. The chain tests run two real services in their own processes (B under
uvicorn; A under uvicorn, or hypercorn on trio), a raw-socket client that leaves A, and wait for
B's token to trip through B's ``/await/{rid}/{what}`` (a bounded wait on the server side).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from starlette.types import ASGIApp, Receive, Scope, Send

import fastapi_abort.httpx
from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelled,
)
from fastapi_abort.httpx import HTTPX_MISSING, NOT_ASYNC_STREAM, TokenTransport
from tests.raw_http import leave, new_id, request_bytes
from tests.serve import KINDS, Served, assert_one_quiet_line, listening, running

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
#: Gives service A (tests/propagation_apps.py) the address of service B. Not imported from there:
#: importing the apps would set up their logging in this process.
UPSTREAM = "PROPAGATION_UPSTREAM"

#: Bound on every wait for something that should happen (seconds); never reached when it works.
WAIT = 10.0
#: How soon B's token must trip once A's client has left: a correctness bound, not a speed goal.
PROPAGATION_BOUND = 5.0

EXPLICIT = CancellationReason.EXPLICIT

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
WHOLE = HEAD + b"Content-Length: 5\r\n\r\nhello"
# A chunked body of which two chunks are sent at once, and then nothing more.
TWO_CHUNKS = HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n6\r\nsecond\r\n"
# The same two chunks, and the end of the body.
ALL_CHUNKS = TWO_CHUNKS + b"0\r\n\r\n"
# A body that promises 100 bytes and sends 5.
PARTIAL = HEAD + b"Content-Length: 100\r\n\r\nhello"


# -- unit tests: an upstream on loopback, in the test's own event loop ---------------------------


@dataclass
class Upstream:
    """A one-response-per-request HTTP/1.1 server that records what its clients do."""

    reply: bytes | None
    url: str = ""
    connections: int = 0
    requests: int = 0
    received: anyio.Event = field(default_factory=anyio.Event)
    closed: anyio.Event = field(default_factory=anyio.Event)

    async def serve(self, stream: SocketStream) -> None:
        self.connections += 1
        reader = BufferedByteReceiveStream(stream)
        try:
            async with stream:
                while True:
                    await reader.receive_until(b"\r\n\r\n", 65536)
                    self.requests += 1
                    self.received.set()
                    if self.reply is not None:
                        await stream.send(self.reply)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead):
            # The client closed the connection (FIN or RST).
            self.closed.set()


@asynccontextmanager
async def upstream(reply: bytes | None) -> AsyncIterator[Upstream]:
    """Serve ``reply`` (``None``: never answer) to every request on 127.0.0.1."""
    server = Upstream(reply)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server.url = f"http://127.0.0.1:{port}/"
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, server.serve)
        yield server
        tasks.cancel_scope.cancel()


@asynccontextmanager
async def bound(token: CancellationToken) -> AsyncIterator[httpx.AsyncClient]:
    """A client bound to ``token``, over a pool of its own."""
    async with (
        httpx.AsyncHTTPTransport() as pool,
        httpx.AsyncClient(transport=TokenTransport(token, pool), timeout=WAIT) as client,
    ):
        yield client


@pytest.mark.anyio
async def test_completed_calls_are_unaffected_and_reuse_their_connection() -> None:
    with CancellationTokenSource() as source:
        async with upstream(WHOLE) as server, bound(source.token) as client:
            first = await client.get(server.url)
            second = await client.get(server.url)
            assert (first.text, second.text) == ("hello", "hello")
            # Kept in the pool between calls: one connection for both.
            assert (server.connections, server.requests) == (1, 2)
            # Every registration on the token was undone once its await was over.
            assert source.token._callbacks == {}
            assert not server.closed.is_set()


@pytest.mark.anyio
async def test_token_cancelled_before_the_call_raises_without_sending() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    source = CancellationTokenSource()
    source.cancel()
    transport = TokenTransport(source.token, httpx.MockTransport(handler))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(OperationCancelled) as caught:
            await client.get("http://upstream.invalid/")
    assert caught.value.token is source.token
    assert caught.value.reason is EXPLICIT
    assert sent == []


async def get_cancelling_once_received(
    client: httpx.AsyncClient, server: Upstream, cancel: Callable[[], object]
) -> OperationCancelled:
    """GET from ``server``, call ``cancel()`` once the server has the request, and return the
    OperationCancelled the GET raised (any other outcome propagates, or fails the test)."""

    async def cancel_once_received() -> None:
        await server.received.wait()
        cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(cancel_once_received)
        # Caught inside: the task group would wrap it in an exception group.
        try:
            response = await client.get(server.url)
        except OperationCancelled as exc:
            return exc
    raise AssertionError(f"the GET was not cancelled: {response}")


@pytest.mark.anyio
@pytest.mark.parametrize("reply", [None, PARTIAL], ids=["waiting for the head", "reading the body"])
async def test_token_that_trips_mid_call_closes_the_connection(reply: bytes | None) -> None:
    source = CancellationTokenSource()
    async with upstream(reply) as server, bound(source.token) as client:
        with anyio.fail_after(WAIT):
            # With PARTIAL the head arrives and 95 bytes of body never will: get() reads the
            # whole body, and is cancelled in that read.
            cancelled = await get_cancelling_once_received(client, server, source.cancel)
            assert cancelled.token is source.token
            assert cancelled.reason is EXPLICIT
            await server.closed.wait()


@pytest.mark.anyio
async def test_streamed_body_is_cancelled_mid_stream() -> None:
    source = CancellationTokenSource()
    async with upstream(TWO_CHUNKS) as server, bound(source.token) as client:
        with anyio.fail_after(WAIT):
            async with client.stream("GET", server.url) as response:
                chunks = response.aiter_raw()
                assert await chunks.__anext__() == b"first"

                async def cancel_while_reading() -> None:
                    # The second chunk came with the first; then nothing: wait for the read
                    # that blocks, and cancel it.
                    await anyio.wait_all_tasks_blocked()
                    source.cancel()

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(cancel_while_reading)
                    with pytest.raises(OperationCancelled):
                        async for _ in chunks:
                            pass
            await server.closed.wait()


@pytest.mark.anyio
@pytest.mark.parametrize("reply", [TWO_CHUNKS, ALL_CHUNKS], ids=["more to come", "all buffered"])
async def test_token_that_trips_between_reads_refuses_the_next_read(reply: bytes) -> None:
    with CancellationTokenSource() as source:
        async with (
            upstream(reply) as server,
            bound(source.token) as client,
            client.stream("GET", server.url) as response,
        ):
            chunks = response.aiter_raw()
            assert await chunks.__anext__() == b"first"
            source.cancel()
            # "second" came with "first" and needs no await to read: refused all the same.
            with pytest.raises(OperationCancelled):
                await chunks.__anext__()
            if reply is TWO_CHUNKS:
                # Half read: closed at once, not when the client is.
                with anyio.fail_after(WAIT):
                    await server.closed.wait()


@pytest.mark.anyio
async def test_deadline_of_the_token_cancels_the_call() -> None:
    with CancellationTokenSource(timeout=0.2) as source:
        async with upstream(None) as server, bound(source.token) as client:
            with anyio.fail_after(WAIT), pytest.raises(OperationCancelled) as caught:
                await client.get(server.url)
            assert caught.value.reason is CancellationReason.DEADLINE
            with anyio.fail_after(WAIT):
                await server.closed.wait()


@pytest.mark.anyio
async def test_other_cancellations_pass_through_untouched() -> None:
    with CancellationTokenSource() as source:
        async with upstream(None) as server, bound(source.token) as client:
            with anyio.fail_after(WAIT):
                with anyio.CancelScope() as outer:
                    await get_cancelling_once_received(client, server, outer.cancel)
                assert outer.cancelled_caught
                assert not source.is_cancellation_requested
                await server.closed.wait()


@pytest.mark.anyio
async def test_token_that_can_never_be_cancelled_adds_nothing() -> None:
    mocked = httpx.Response(200, content=b"hello")
    transport = TokenTransport(CancellationToken.NONE, httpx.MockTransport(lambda _: mocked))
    response = await transport.handle_async_request(httpx.Request("GET", "http://upstream/"))
    # The inner transport's own response, its stream not wrapped.
    assert response is mocked
    assert response.stream is mocked.stream


@pytest.mark.anyio
async def test_closing_the_client_leaves_the_shared_pool_open() -> None:
    with CancellationTokenSource() as source:
        async with upstream(WHOLE) as server, httpx.AsyncHTTPTransport() as pool:
            for _ in range(2):
                async with httpx.AsyncClient(
                    transport=TokenTransport(source.token, pool)
                ) as client:
                    assert (await client.get(server.url)).text == "hello"
            # Two clients, one after the other, one connection: the pool outlived the first.
            assert (server.connections, server.requests) == (1, 2)
            assert not server.closed.is_set()


@pytest.mark.anyio
async def test_sync_response_stream_is_refused_with_a_clear_message() -> None:
    class SyncOnly(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"hello"

    mock = httpx.MockTransport(lambda _: httpx.Response(200, stream=SyncOnly()))
    with CancellationTokenSource() as source:
        transport = TokenTransport(source.token, mock)
        with pytest.raises(TypeError) as caught:
            await transport.handle_async_request(httpx.Request("GET", "http://upstream/"))
    assert str(caught.value).startswith(NOT_ASYNC_STREAM.split("{")[0])


def test_import_without_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # makes `import httpx` fail
    monkeypatch.delitem(sys.modules, "fastapi_abort.httpx")
    with pytest.raises(ImportError) as caught:
        importlib.import_module("fastapi_abort.httpx")
    assert str(caught.value) == HTTPX_MISSING
    assert "fastapi-abort[httpx]" in str(caught.value)
    # The module this file imported is still the working one.
    monkeypatch.undo()
    assert sys.modules["fastapi_abort.httpx"] is fastapi_abort.httpx


# -- the chain: a raw client -> service A -> service B, on real servers ---------------------------


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("propagation")


@contextlib.contextmanager
def run_service(
    logs: Path, role: str, kind: str, upstream: Served | None = None
) -> Iterator[Served]:
    """Run service ``role`` under server ``kind``; on the way out, check its log stayed quiet."""
    env = {} if upstream is None else {UPSTREAM: f"http://127.0.0.1:{upstream.port}"}
    target = f"tests.propagation_apps:{role}"
    with running(kind, logs / f"{role}-{kind}.log", target, env=env) as service:
        yield service
    # Nothing above INFO from any logger, in the whole life of the service.
    assert not service.noisy(), service.output()


@pytest.fixture(scope="module")
def service_b(logs: Path) -> Iterator[Served]:
    with run_service(logs, "b", "uvicorn-httptools") as service:
        yield service


@pytest.fixture(scope="module", params=KINDS)
def service_a(request: pytest.FixtureRequest, logs: Path, service_b: Served) -> Iterator[Served]:
    with run_service(logs, "a", request.param, service_b) as service:
        yield service


def leave_mid_call(a: Served, b: Served, path: str, rid: str, wait_on: Served) -> int:
    """Call A at ``path``, leave once ``wait_on`` says ``started``/``streaming``; return when
    (``time.monotonic_ns()``)."""
    event = "streaming" if wait_on is a else "started"
    with a.connect() as client:
        client.sendall(request_bytes(path))
        assert wait_on.wait_for(rid, event)["happened"]
        return leave(client)


@pytest.mark.server
@pytest.mark.parametrize(
    ("route", "downstream", "via"),
    [("scope", "hold", "scope"), ("transport", "hold", "transport"), ("stream", "stream", "")],
)
def test_client_leaving_a_trips_the_token_of_b(
    service_a: Served, service_b: Served, route: str, downstream: str, via: str
) -> None:
    rid = new_id()
    wait_on = service_a if route == "stream" else service_b
    left_ns = leave_mid_call(service_a, service_b, f"/call/{route}/{rid}", rid, wait_on)

    b = service_b.wait_for(rid, "logged")
    a = service_a.wait_for(rid, "logged")
    assert b["tripped"]
    assert b["reason"] == "client disconnected"
    assert b["finished"]
    assert (b["tripped_ns"] - left_ns) / 1e9 < PROPAGATION_BOUND
    assert a["reason"] == "client disconnected"
    assert a["outcome"] == "OperationCancelled"
    assert_one_quiet_line(service_a, f"/call/{route}/{rid}", a)
    assert_one_quiet_line(service_b, f"/{downstream}/{rid}", b)
    print(
        f"\nA ({service_a.kind}) /{route}: client left -> A's token "
        f"{(a['tripped_ns'] - left_ns) / 1e6:.2f} ms -> B's token "
        f"{(b['tripped_ns'] - left_ns) / 1e6:.2f} ms"
    )
    if via:
        # The aborted connection was closed, not put back in the pool: A's next call to B goes
        # out on another connection, and works.
        after = new_id()
        reply = service_a.get(f"/ping/{via}/{after}")
        assert reply["rid"] == after
        assert reply["client_port"] != b["client_port"]


# -- the example of the docs: the shop and the warehouse, in this process, on real sockets ---------


class InProcessServer(uvicorn.Server):
    """uvicorn in the test's own event loop, leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serving(app: ASGIApp, sock: socket.socket) -> AsyncIterator[None]:
    server = InProcessServer(uvicorn.Config(app, log_config=None))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        try:
            yield
        finally:
            server.should_exit = True
    sock.close()


class AbortedLines(logging.Handler):
    """Collects the quiet lines, and says when one for a path has been logged."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.changed = anyio.Event()

    def emit(self, log: logging.LogRecord) -> None:
        self.lines.append(log.getMessage())
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, path: str) -> None:
        while not any(line.startswith(f"GET {path}: 499 ") for line in self.lines):
            await self.changed.wait()


@pytest.fixture
def aborted_lines() -> Iterator[AbortedLines]:
    handler = AbortedLines()
    logger = logging.getLogger("fastapi_abort")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs on asyncio only
@pytest.mark.parametrize(
    ("shop_path", "warehouse_path", "leave_after"),
    [("/items/7", "/stock/7", b""), ("/deliveries", "/deliveries", b"delivery 0")],
)
async def test_example_shopper_leaving_stops_the_warehouse(
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    aborted_lines: AbortedLines,
    shop_path: str,
    warehouse_path: str,
    leave_after: bytes,
) -> None:
    warehouse_socket, shop_socket = listening(64), listening(64)
    monkeypatch.setenv("WAREHOUSE_URL", f"http://127.0.0.1:{warehouse_socket.getsockname()[1]}")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "propagation", raising=False)
    example = importlib.import_module("propagation")
    arrived = anyio.Event()

    async def warehouse(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            arrived.set()
        await example.warehouse(scope, receive, send)

    async with serving(warehouse, warehouse_socket), serving(example.shop, shop_socket):
        with anyio.fail_after(WAIT):
            port = shop_socket.getsockname()[1]
            async with await anyio.connect_tcp("127.0.0.1", port) as shopper:
                await shopper.send(f"GET {shop_path} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
                await arrived.wait()
                received = b""
                while leave_after not in received:
                    received += await shopper.receive()
            # The shopper has left the shop; the warehouse must see the shop leave in turn.
            await aborted_lines.wait_for(warehouse_path)
            await aborted_lines.wait_for(shop_path)
    for path in {shop_path, warehouse_path}:
        mine = [line for line in aborted_lines.lines if line.startswith(f"GET {path}: 499 ")]
        assert len(mine) == (2 if shop_path == warehouse_path else 1), aborted_lines.lines
    # Quiet: nothing from any logger above INFO, in either service.
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []
