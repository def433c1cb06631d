"""fastapi_abort.httpx: TokenTransport cancels the outgoing call when its token trips.

The upstream is a small server running in the test itself on 127.0.0.1 (so a closed connection
is a real one), on asyncio and trio. Across real services (a client leaves A, and A's call to B
is cancelled with it): tests/servers/test_propagation.py.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

import fastapi_abort.httpx
from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelled,
)
from fastapi_abort.httpx import HTTPX_MISSING, NOT_ASYNC_STREAM, TokenTransport
from tests.support import WAIT

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
