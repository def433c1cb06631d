"""Interrupting work that has a cancellation of its own: ``run()`` and ``cancel_on()``.

Work with its own cancellation (drivers that cancel a query on the server) has two shapes, one
for each kind of code:

* :func:`run`, for an ``await``: the awaitable runs in a task of its own, which the token
  cancels **once** (edge-triggered, as asyncio's own cancellation is). An anyio cancel scope is
  level-triggered: it cancels every await inside it again and again, including a driver's own
  "send the server a cancel request, then wait for it" cleanup, which then gives up and throws
  the connection away (psycopg 3) or drops the cancel request (asyncpg under SQLAlchemy).
* :func:`cancel_on`, for ``def`` code: a blocking cancel function (``conn.cancel_safe``,
  ``sqlite3.Connection.interrupt``) run in a thread of its own when the token trips, repeated
  until the block ends (a statement that had not reached the server yet when the first cancel
  was sent is caught by the next), and waited for on exit, so that no cancel is still on its
  way when the connection serves another statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.from_thread

from ._backend import call_soon_threadsafe, running_asyncio_loop
from ._cancelled import OperationCancelled
from ._wake import on_loop

if TYPE_CHECKING:
    from ._token import CancellationToken

T = TypeVar("T")

logger = logging.getLogger("fastapi_abort")

CANCEL_FAILED = "Cancel function %r raised; it is not called again for this block"
BAD_REPEAT = "cancel_on() needs repeat > 0 seconds, got {repeat!r}"
#: The longest pause between two calls of a cancel function: the pause doubles from ``repeat``.
MAX_REPEAT = 1.0


async def run(token: CancellationToken, awaitable: Awaitable[T]) -> T:
    """CancellationToken.run(): see its docstring."""
    if token.is_cancellation_requested:
        _close(awaitable)
        raise OperationCancelled(token)
    loop = running_asyncio_loop()
    if loop is None:
        # trio (no async database driver runs on it): its cancellation is level-triggered by
        # design, and nothing can cancel a task exactly once.
        with token.scope():
            return await awaitable
    call_soon = call_soon_threadsafe("CancellationToken.run()")
    task = asyncio.ensure_future(awaitable)
    cancelled = False

    def cancel() -> None:
        nonlocal cancelled
        if not task.done():
            cancelled = True
            task.cancel()

    with token.register(on_loop(cancel, call_soon)):  # Task.cancel() is not thread-safe
        try:
            await asyncio.wait((task,))
        except BaseException:
            # Cancelled from outside: the task is cancelled once, as the token would, and its
            # cleanup (the driver's cancel request) is waited for, shielded from the level-
            # triggered scope that may have cancelled us.
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait((task,))
            if not task.cancelled():
                task.exception()  # retrieved: asyncio would log it as never retrieved
            raise
    if cancelled:
        if task.cancelled():
            raise OperationCancelled(token)
        exc = task.exception()
        if exc is not None:
            # The driver turned the cancellation into an error of its own.
            raise OperationCancelled(token) from exc
    return task.result()


@contextlib.contextmanager
def cancel_on(
    token: CancellationToken,
    cancel: Callable[[], object],
    translate: tuple[type[BaseException], ...],
    repeat: float,
) -> Iterator[None]:
    """CancellationToken.cancel_on(): see its docstring."""
    if not repeat > 0:
        raise ValueError(BAD_REPEAT.format(repeat=repeat))
    token.throw_if_cancellation_requested()
    done = threading.Event()
    lock = threading.Lock()
    threads: list[threading.Thread] = []

    def start() -> None:
        # Runs in the thread that cancels the token (the event loop's, for a request): it must
        # not block, and the cancel function does, so it gets a thread of its own.
        with lock:
            if done.is_set():
                return
            thread = threading.Thread(
                target=_keep_cancelling,
                args=(cancel, done, repeat),
                name="fastapi-abort-cancel",
                daemon=True,
            )
            thread.start()
            threads.append(thread)

    registration = token.register(start)
    try:
        yield
    except translate as exc:
        if not token.is_cancellation_requested:
            raise  # a statement_timeout, a lock timeout: what it is, not a client that left
        raise OperationCancelled(token) from exc
    finally:
        registration.unregister()
        # Under the lock: a callback running right now has either started its thread (joined
        # here) or will see `done` and start none. After this, no cancel is on its way.
        with lock:
            done.set()
        for thread in threads:
            thread.join()


def _keep_cancelling(cancel: Callable[[], object], done: threading.Event, repeat: float) -> None:
    pause = repeat
    while True:
        try:
            cancel()
        except Exception:
            logger.exception(CANCEL_FAILED, cancel)
            return
        if done.wait(pause):
            return
        pause = min(pause * 2, MAX_REPEAT)


def _close(awaitable: Awaitable[object]) -> None:
    # A coroutine that never started would warn "was never awaited" when collected.
    if inspect.iscoroutine(awaitable):
        awaitable.close()
