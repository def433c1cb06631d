"""Outbound httpx calls bound to a token: :class:`TokenTransport`.

Needs httpx (``pip install 'fastapi-abort[httpx]'``). ``with ct.scope(): await client.get(...)``
already cancels a call when the token trips; this transport binds a whole client to a token
instead, so that every request it sends, and every response body it reads (however late, and
wherever: a body handed on to a ``StreamingResponse`` included), is cancelled with the token.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import anyio

from ._budget import BUDGET_HEADER, budget_of, budget_value
from ._cancelled import OperationCancelled
from ._token import CancellationToken

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

    A token with a deadline (:meth:`~fastapi_abort.CancellationToken.time_remaining`) sends
    what is left of it as the ``x-request-budget-ms`` header, in whole milliseconds rounded
    down, so that a service behind ``install(app, max_budget=...)`` stops when this caller
    stops waiting. A budget already in the request's headers is kept if it is smaller.
    ``send_budget=False`` sends none (say, to a third party's API). The downstream's clock
    starts when the request reaches it, so its deadline falls about one request's time on the
    wire after this token's, less the rounding (under a millisecond): a 504 that comes once the
    budget sent has run out therefore means this token's deadline is a millisecond away at
    most. The transport waits for it and raises :class:`~fastapi_abort.OperationCancelled`
    with reason ``DEADLINE``, so that every service of a chain ends by its own deadline, never
    by the next one's error.
    """

    def __init__(
        self,
        token: CancellationToken,
        transport: httpx.AsyncBaseTransport,
        *,
        send_budget: bool = True,
    ) -> None:
        #: The token that cancels this transport's requests.
        self.token = token
        #: The transport that sends the requests; left open by :meth:`aclose`.
        self.transport = transport
        #: Whether each request carries the token's remaining deadline as its budget header.
        self.send_budget = send_budget

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport, cancelled when the token trips.

        :raises OperationCancelled: if the token is cancelled before or while the request is
            sent and its response head read; then nothing is sent, or the connection is closed.
        """
        token = self.token
        if not token.can_be_cancelled:
            return await self.transport.handle_async_request(request)
        token.throw_if_cancellation_requested()
        budget = _add_budget(request, token.time_remaining()) if self.send_budget else None
        sent_at = time.monotonic()
        with token.scope():
            response = await self.transport.handle_async_request(request)
        if (
            response.status_code == 504
            and budget is not None
            and time.monotonic() - sent_at >= budget
        ):
            await _outlast(token, response)
        # The body is read later, by the client or by whoever iterates it: bind it as well.
        response.stream = _CancellableStream(token, response.stream)
        return response

    async def aclose(self) -> None:
        """Do nothing: the wrapped transport is shared, and closed by its owner."""


def _add_budget(request: httpx.Request, remaining: float | None) -> float | None:
    """Give ``request`` the budget of ``remaining`` seconds, unless it carries a smaller one;
    the seconds the budget it carries now gives, or None without one."""
    headers = request.headers
    given = budget_of(
        ((BUDGET_HEADER.encode(), value.encode()) for value in headers.get_list(BUDGET_HEADER)),
        math.inf,
    )
    if remaining is None or (given is not None and given <= remaining):
        return given
    value = headers[BUDGET_HEADER] = budget_value(remaining)
    return int(value) / 1000


async def _outlast(token: CancellationToken, response: httpx.Response) -> None:
    """The downstream's 504 came once the budget sent ran out: wait for the token's own
    deadline, at most the budget's rounding away, and raise its cancellation. A deadline removed
    or put off meanwhile (a route's ``set_deadline()``) leaves the 504 to the caller."""
    remaining = token.time_remaining()
    if remaining is None or remaining > _OUTLAST:
        return
    try:
        # The 2 ms are room for a loop clock that counts whole milliseconds (uvloop).
        with anyio.move_on_after(remaining + 0.002):
            await token.wait()
        # The deadline's timer may not have tripped the token yet (on trio it fires in a thread
        # of its own, and a loaded machine delays its hand-over): the check reads the passed
        # deadline itself.
        token.throw_if_cancellation_requested()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await response.aclose()
        raise


#: The longest wait for the token's own deadline after the downstream's 504 (seconds): the
#: budget's rounding (1 ms), with room; a deadline further away was put off after the budget
#: was sent.
_OUTLAST = 0.01


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
