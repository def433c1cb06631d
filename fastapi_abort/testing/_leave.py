"""When the client leaves: the :class:`Leave` trigger and the functions that make one.

A trigger is bound to the one request it serves (:meth:`Leave._bind`), told what the app sends
(:meth:`Leave._sent`), and run beside the app for the triggers based on time or on an event
(:meth:`Leave._run`); :func:`leave_mid_upload` is read by the exchange as the app reads its body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from .._checks import is_count, is_seconds

if TYPE_CHECKING:
    from starlette.types import Message

    from ._exchange import _Exchange

LEAVE_REUSED = "{leave!r} was given to a request already; a Leave serves one request only."
BAD_SECONDS = "seconds must be a number >= 0, got {value!r}"
BAD_CHUNKS = (
    "chunks must be an int >= 1 (use leave_on_response_start() to leave before the first), "
    "got {value!r}"
)
BAD_BYTES = "after_bytes must be an int >= 0, got {value!r}"


class Leave:
    """When the client leaves. This base class leaves only when told to: :meth:`now`.

    ::

        leave = Leave()
        async with anyio.create_task_group() as tg:
            tg.start_soon(leave_when_the_query_runs, leave)  # calls leave.now()
            outcome = await client.get("/report", leave=leave)

    A ``Leave`` serves one request. Once the client has left, every ``receive()`` of the app
    returns ``http.disconnect``, and what the app still sends is recorded but reaches nobody.
    The other triggers (:func:`leave_when`, :func:`leave_on_response_start`,
    :func:`leave_after_chunks`, :func:`leave_mid_upload`, :func:`leave_after`) also accept
    :meth:`now`.
    """

    def __init__(self) -> None:
        self._exchange: _Exchange | None = None
        self._used = False
        self._over = False
        self._left = False
        # What the factories below set: the moment the client leaves by itself.
        self._name = "Leave()"
        self._seconds: float | None = None
        self._event: anyio.Event | None = None
        self._on_start = False
        self._chunks: int | None = None
        self._after_bytes: int | None = None

    def now(self) -> None:
        """Make the client leave now.

        Idempotent. Called before the request starts, the client is gone from the start (the
        app's first ``receive()`` returns ``http.disconnect``); once the request is over, does
        nothing. Call on the event loop thread (from a test task), not from a worker thread.
        """
        if self._left or self._over:
            return
        self._left = True
        if self._exchange is not None:
            self._exchange.client_leaves()

    @property
    def left(self) -> bool:
        """Whether the client has left (while the request ran, or before it started)."""
        return self._left

    def __repr__(self) -> str:
        return self._name

    # What the request this trigger serves calls.

    def _bind(self, exchange: _Exchange) -> None:
        if self._used:
            raise RuntimeError(LEAVE_REUSED.format(leave=self))
        self._used = True
        self._exchange = exchange
        if self._event is not None and self._event.is_set():
            self._left = True
        if self._left:
            exchange.client_leaves()

    def _unbind(self) -> None:
        self._exchange = None
        self._over = True

    async def _run(self) -> None:
        """Runs beside the app while the request lasts (cancelled when the app returns)."""
        if self._seconds is not None:
            await anyio.sleep(self._seconds)
            self.now()
        elif self._event is not None:
            await self._event.wait()
            self.now()

    def _sent(self, message: Message, body_messages: int) -> None:
        """The app has sent ``message``, the ``body_messages``-th body message so far."""
        kind = message["type"]
        if (self._on_start and kind == "http.response.start") or (
            self._chunks is not None
            and kind == "http.response.body"
            and body_messages >= self._chunks
        ):
            self.now()


def leave_after(seconds: float) -> Leave:
    """The client leaves ``seconds`` after the request starts (0 included).

    The only trigger based on time: prefer the others, which fire on what the app does, when a
    test must not depend on how fast the machine is. If the app returns sooner, the client
    never leaves (:attr:`RequestOutcome.client_left` is False).

    :raises ValueError: if ``seconds`` is negative or not a finite number.
    """
    if not is_seconds(seconds):
        raise ValueError(BAD_SECONDS.format(value=seconds))
    leave = Leave()
    leave._name, leave._seconds = f"leave_after({seconds!r})", seconds
    return leave


def leave_when(event: anyio.Event) -> Leave:
    """The client leaves when ``event`` is set: by the endpoint at the point to test, say.

    ::

        reached = anyio.Event()

        @app.get("/report")
        async def report(ct: RequestAborted) -> str:
            reached.set()  # the query starts: the client leaves now
            return await run_query(ct)

        outcome = await client.get("/report", leave=leave_when(reached))

    An event set before the request starts makes the client leave at once. Set the event on the
    event loop thread (``anyio.from_thread.run_sync(event.set)`` from a ``def`` endpoint).
    """
    leave = Leave()
    leave._name, leave._event = "leave_when(event)", event
    return leave


def leave_on_response_start() -> Leave:
    """The client leaves as soon as the app sends ``http.response.start``: it got the status
    and headers, then went away. An app that never starts a response is never left."""
    leave = Leave()
    leave._name, leave._on_start = "leave_on_response_start()", True
    return leave


def leave_after_chunks(chunks: int) -> Leave:
    """The client leaves once the app has sent ``chunks`` ``http.response.body`` messages.

    Every body message counts, empty ones included (a ``StreamingResponse`` ends with an empty
    one). If the ``chunks``-th message is the last of the response, the client leaves after a
    complete response, which is no abort at all; if the response has fewer, it never leaves.

    :raises ValueError: if ``chunks`` is not an int >= 1.
    """
    if not is_count(chunks, low=1):
        raise ValueError(BAD_CHUNKS.format(value=chunks))
    leave = Leave()
    leave._name, leave._chunks = f"leave_after_chunks({chunks!r})", chunks
    return leave


def leave_mid_upload(after_bytes: int) -> Leave:
    """The client leaves once ``after_bytes`` bytes of the request body have been read.

    The body message that reaches ``after_bytes`` is cut there (and says ``more_body``); the
    next ``receive()`` returns ``http.disconnect``. With 0, the client leaves at the first
    ``receive()``. With a body shorter than ``after_bytes``, it leaves right after the last
    message of the body was read. The trigger is driven by reads: if nobody reads the body
    (neither the app nor the middleware's watcher), the client never leaves.

    :raises ValueError: if ``after_bytes`` is not an int >= 0.
    """
    if not is_count(after_bytes):
        raise ValueError(BAD_BYTES.format(value=after_bytes))
    leave = Leave()
    leave._name, leave._after_bytes = f"leave_mid_upload(after_bytes={after_bytes!r})", after_bytes
    return leave
