"""Waiting on a token: on an event loop (``wait()``, ``scope()``), and in a worker thread
(``wait_blocking()``). The methods of :class:`~fastapi_abort.CancellationToken` that wait are
these functions; their docstrings say what each promises.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio

from ._backend import call_soon_threadsafe, running_asyncio_loop
from ._cancelled import OperationCancelled
from ._checks import check_seconds
from ._lifecycle import lock
from ._reason import NOT_CANCELLED
from ._wake import WakeFuture, on_loop

if TYPE_CHECKING:
    from ._token import CancellationToken


async def wait(token: CancellationToken) -> None:
    """CancellationToken.wait()."""
    if token.is_cancellation_requested:
        return
    loop = running_asyncio_loop()
    if loop is not None:
        # A bare future and a one-slot callback: a waiting request holds about 600 bytes less
        # than with an anyio.Event (an asyncio.Event, its deque, two coroutine frames) and a
        # closure (measured with tracemalloc, python -m benchmarks.micro memory).
        future = loop.create_future()
        with token.register(WakeFuture(future)):
            await future
        return
    event = anyio.Event()
    call_soon = call_soon_threadsafe("CancellationToken.wait()")
    with token.register(on_loop(event.set, call_soon)):
        await event.wait()


@contextlib.contextmanager
def scope(token: CancellationToken) -> Iterator[anyio.CancelScope]:
    """CancellationToken.scope()."""
    if not token.can_be_cancelled:
        with anyio.CancelScope() as cancel_scope:
            yield cancel_scope
        return
    # Checks for a loop first, so that a worker thread gets the error that explains itself.
    call_soon = call_soon_threadsafe("CancellationToken.scope()")
    cancel_scope = anyio.CancelScope()
    with token.register(on_loop(cancel_scope.cancel, call_soon)), cancel_scope:
        yield cancel_scope
    # cancelled_caught is true only if this scope's own cancellation was caught (an outer one
    # propagates out of the `with` above): by the token, or through the yielded scope (its
    # deadline, its cancel()), which is not the token's doing.
    if cancel_scope.cancelled_caught and token.is_cancellation_requested:
        raise OperationCancelled(token)


def wait_blocking(token: CancellationToken, timeout: float | None) -> bool:
    """CancellationToken.wait_blocking()."""
    if timeout is not None:
        check_seconds("wait_blocking", timeout)
        if timeout == math.inf:
            timeout = None  # threading.Event.wait() cannot take an infinity
    if token.is_cancellation_requested:
        return True
    new_event = threading.Event()  # made outside the lock, as in register()
    with lock:
        event = token._event
        if event is None:
            event = token._event = new_event
        if token._reason is not NOT_CANCELLED:
            return True
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        # Wake at the deadline too, in case its timer cannot run; re-read it each time round,
        # as cancel_after() may move it.
        deadline = token._deadline
        until = end if deadline is None else deadline if end is None else min(end, deadline)
        wait = None if until is None else max(0.0, until - time.monotonic())
        if event.wait(wait) or token.is_cancellation_requested:
            return True
        if end is not None and time.monotonic() >= end:
            return False
