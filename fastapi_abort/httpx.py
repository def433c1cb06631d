"""Outbound httpx calls bound to a token: :class:`TokenTransport`.

Needs httpx (``pip install 'fastapi-abort[httpx]'``). ``with ct.scope(): await client.get(...)``
already cancels a call when the token trips; this transport binds a whole client to a token
instead, so that every request it sends, and every response body it reads (however late, and
wherever: a body handed on to a ``StreamingResponse`` included), is cancelled with the token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from ._token import CancellationToken, OperationCancelled

HTTPX_MISSING = (
    "fastapi_abort.httpx needs httpx, which is not installed. Install the extra: "
    "pip install 'fastapi-abort[httpx]'"
)
NOT_ASYNC_STREAM = (
    "TokenTransport wraps async transports only, and this one returned a response whose stream "
    "is not an httpx.AsyncByteStream: {stream!r}. Use it with httpx.AsyncClient."
)

try:
    import httpx
except ImportError as exc:
    raise ImportError(HTTPX_MISSING, name=exc.name) from exc

__all__ = ("TokenTransport",)


class TokenTransport(httpx.AsyncBaseTransport):
    """An httpx transport that cancels its requests and their response bodies with ``token``.

    ::

        pool = httpx.AsyncHTTPTransport()  # once, for the app's life

        async with httpx.AsyncClient(transport=TokenTransport(ct, pool)) as client:
            reply = await client.get(url)

    Each request goes to ``transport``, and each await of it runs in ``token.scope()``: sending
    the request, waiting for the response, and every read of the response body. When the token
    trips, the await in progress is cancelled and raises
    :class:`~fastapi_abort.OperationCancelled`; httpcore then closes the connection rather than
    returning it to the pool, so the server at the other end sees its client leave. A token
    that is already cancelled raises at once, before anything is sent, and before each further
    body read (even one a buffer could serve).

    A token that can never be cancelled (``CancellationToken.NONE``, or a request's token once
    its response is complete) costs nothing: requests go straight to ``transport``.

    ``transport`` is required, and never closed here (closing the client leaves it open): one
    client per request and token is cheap over a shared pool (tens of microseconds), while a new
    :class:`httpx.AsyncHTTPTransport` per request costs its own connections and SSL context
    (tens of milliseconds). Close the pool yourself when the app stops.

    For ``async`` code only (an :class:`httpx.AsyncClient`), on asyncio or trio. Other
    cancellations (a timeout, a cancelled task group) pass through untouched.
    """

    def __init__(self, token: CancellationToken, transport: httpx.AsyncBaseTransport) -> None:
        #: The token that cancels this transport's requests.
        self.token = token
        #: The transport that sends the requests; left open by :meth:`aclose`.
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport, cancelled when the token trips.

        :raises OperationCancelled: if the token is cancelled before or while the request is
            sent and its response head read; then nothing is sent, or the connection is closed.
        """
        token = self.token
        if not token.can_be_cancelled:
            return await self.transport.handle_async_request(request)
        token.throw_if_cancellation_requested()
        with token.scope():
            response = await self.transport.handle_async_request(request)
        # The body is read later, by the client or by whoever iterates it: bind it as well.
        response.stream = _CancellableStream(token, response.stream)
        return response

    async def aclose(self) -> None:
        """Do nothing: the wrapped transport is shared, and closed by its owner."""


class _CancellableStream(httpx.AsyncByteStream):
    """A response body whose every read is cancelled when the token trips."""

    def __init__(self, token: CancellationToken, stream: object) -> None:
        if not isinstance(stream, httpx.AsyncByteStream):
            # What httpx.AsyncClient itself would refuse, one step later.
            raise TypeError(NOT_ASYNC_STREAM.format(stream=stream))
        self._token = token
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _CancellableChunks(self._token, self._stream)

    async def aclose(self) -> None:
        await self._stream.aclose()


class _CancellableChunks(AsyncIterator[bytes]):
    """The iterator behind :class:`_CancellableStream`: a class, not an async generator, so that
    no suspended generator is left for the garbage collector when a read is cancelled. Its
    ``__aiter__`` (returning itself) comes from :class:`collections.abc.AsyncIterator`."""

    __slots__ = ("_chunks", "_stream", "_token")

    def __init__(self, token: CancellationToken, stream: httpx.AsyncByteStream) -> None:
        self._token = token
        self._stream = stream
        self._chunks = stream.__aiter__()

    async def __anext__(self) -> bytes:
        token = self._token
        try:
            if token.is_cancellation_requested:
                await self._drain()
            with token.scope():
                return await self._chunks.__anext__()
        except OperationCancelled:
            # Close now, as httpcore does for any error in a read: the connection is dropped,
            # never returned to the pool half read, whoever holds on to the response.
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
            raise

    async def _drain(self) -> None:
        """Refuse a read asked for once the token has tripped, even one a buffer could serve.

        Raising here, outside the body's own iterators, would leave httpx's and httpcore's
        generators suspended for the garbage collector (trio warns about each). Reading on in
        the cancelled scope instead makes the cancellation start where a read first waits, deep
        in httpcore, and unwind every generator; what was already buffered is dropped.
        """
        with self._token.scope():
            async for _ in self._chunks:
                pass
        # The rest of the body was all buffered: the read is refused all the same.
        raise OperationCancelled(self._token)
