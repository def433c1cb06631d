"""The token: what work reads, waits on and is cancelled through.

The class holds the whole public surface, each method with the promise it makes; the longer
bodies live with their concept: the state changes in ``_lifecycle`` (by the source, and by a
request's state), registering in ``_registration``, the waits in ``_waiting``, ``run()`` and
``cancel_on()`` in ``_interrupt``, what a check raises in ``_cancelled``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar, final

import anyio

from . import _interrupt, _lifecycle, _registration, _waiting
from ._cancelled import cancelled
from ._checks import check_seconds
from ._reason import NOT_CANCELLED, CancellationReason
from ._registration import CancellationTokenRegistration

T = TypeVar("T")


@final
class CancellationToken:
    """A signal that some work should stop: read it, wait for it, or let it cancel an await.

    Tokens come from a :class:`CancellationTokenSource` (or, for a request, from
    :func:`fastapi_abort.request_aborted`). The source cancels; the token only observes. Every
    method is safe to call from any thread; the ``async`` ones and :meth:`scope` must run on an
    asyncio or trio event loop.

    Cancellation is one-way and happens at most once: once :attr:`is_cancellation_requested` is
    true it stays true, and :attr:`reason` never changes again. A token whose source was closed
    before it was cancelled can never be cancelled (:attr:`can_be_cancelled` is false).
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_closed",
        "_deadline",
        "_event",
        "_origin",
        "_parents",
        "_reason",
        "_timer",
        "_timer_ticket",
    )

    #: A token that is never cancelled, like .NET's ``CancellationToken.None``: a safe default
    #: for optional token parameters.
    NONE: ClassVar[CancellationToken]

    def __init__(self) -> None:
        self._reason: object = NOT_CANCELLED
        self._origin: CancellationToken | None = None
        self._closed = False
        # None once cancelled or closed: no callback is registered from then on.
        self._callbacks: dict[CancellationTokenRegistration, None] | None = {}
        # Created on first use: most tokens never get a thread waiter or a deadline.
        self._event: threading.Event | None = None
        self._deadline: float | None = None
        self._timer: Callable[[], object] | None = None
        self._timer_ticket: object = None
        self._parents: tuple[CancellationToken, ...] = ()

    def __repr__(self) -> str:
        if self._reason is not NOT_CANCELLED:
            state = f"cancelled ({self._reason})"
        elif self._closed:
            state = "never cancelled"
        else:
            state = "not cancelled"
        return f"<CancellationToken {state}>"

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_cancellation_requested(self) -> bool:
        """Whether cancellation has been requested. Cheap enough to call in a tight loop."""
        if self._reason is not NOT_CANCELLED:
            return True
        # Read once: another thread may close the source meanwhile.
        deadline, parents = self._deadline, self._parents
        # A passed deadline counts even if its timer has not fired yet: a CPU-bound loop on the
        # event loop thread would otherwise never let the timer run.
        if deadline is not None and time.monotonic() >= deadline:
            self._cancel(CancellationReason.DEADLINE, None)
            return self._reason is not NOT_CANCELLED
        # A cancelled parent cancels this token now, not only when the link's callback gets its
        # turn among the parent's callbacks (reading a parent whose deadline passed cancels it).
        for parent in parents:
            if parent.is_cancellation_requested:
                self._cancel(parent._reason, parent._origin or parent)
                return self._reason is not NOT_CANCELLED
        return False

    @property
    def can_be_cancelled(self) -> bool:
        """False if this token can never be cancelled (``CancellationToken.NONE``, or a token
        whose source was closed before cancelling it). True once it is cancelled."""
        return self._reason is not NOT_CANCELLED or not self._closed

    @property
    def reason(self) -> object:
        """Why the token was cancelled, or ``None`` while it is not.

        A :class:`CancellationReason` member, or whatever object was passed to
        :meth:`CancellationTokenSource.cancel`. A token cancelled through a link carries its
        parent's reason.
        """
        reason = self._reason
        return None if reason is NOT_CANCELLED else reason

    def time_remaining(self) -> float | None:
        """Seconds left until the token's deadline, or ``None`` if it has none (as gRPC's
        ``time_remaining()``).

        The nearest deadline counts: the token's own (a request's deadline, a source's
        ``cancel_after()``) or that of any token it is linked to. ``0.0`` once the deadline has
        passed, and for a token cancelled for any reason; ``None`` for a closed token. What
        :class:`~fastapi_abort.httpx.TokenTransport` sends on as the next service's budget.
        """
        return _lifecycle.time_remaining(self)

    def throw_if_cancellation_requested(self) -> None:
        """Raise :class:`OperationCancelled` if cancellation has been requested; else do nothing.

        The check to put at the top of each round of a loop, in ``async`` and ``def`` code alike.
        In a worker thread whose host task is itself being cancelled (Starlette stopping the
        stream of a ``def`` generator whose client left), it raises that cancellation instead,
        as the code would meet it without the token: the response still ends as it would, its
        background task included.
        """
        # is_cancellation_requested, with its common case (not cancelled, no deadline, no
        # parents) answered here: this runs in tight loops.
        if self._reason is not NOT_CANCELLED or (
            (self._deadline is not None or self._parents) and self.is_cancellation_requested
        ):
            raise cancelled(self)

    # -- callbacks -----------------------------------------------------------------------------

    def register(self, callback: Callable[[], object]) -> CancellationTokenRegistration:
        """Call ``callback()`` once, when the token is cancelled.

        If the token is already cancelled, ``callback`` runs at once, in this thread, before
        ``register`` returns. Otherwise it runs in the thread that cancels the token (for a
        request token: the event loop thread), so it must be quick and must not block; to do async
        work on cancellation, ``await token.wait()`` in a task instead. Callbacks run in the order
        they were registered. One that raises is logged on the ``fastapi_abort`` logger and does
        not stop the others. On a token that can never be cancelled, ``callback`` never runs and
        nothing is kept.

        :returns: a registration; ``unregister()`` it (or use it as a context manager) once the
            callback is no longer wanted, so that it is not kept alive.
        """
        return _registration.register(self, callback)

    # -- waiting -------------------------------------------------------------------------------

    async def wait(self) -> None:
        """Return once the token is cancelled (at once if it already is).

        Never returns for a token that can never be cancelled (such as a request's token once
        its response is complete), unless the caller is cancelled. To wait at most a while, the
        anyio way: ``with anyio.move_on_after(0.5): await token.wait()``, then check
        :attr:`is_cancellation_requested`.
        """
        await _waiting.wait(self)

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds``, unless the token is cancelled first.

        The equivalent of .NET's ``Task.Delay(ms, token)``.

        :raises OperationCancelled: at once if the token is already cancelled, otherwise as soon
            as it is cancelled during the sleep.
        """
        check_seconds("sleep", seconds)
        self.throw_if_cancellation_requested()
        with self.scope():
            await anyio.sleep(seconds)

    def scope(self) -> contextlib.AbstractContextManager[anyio.CancelScope]:
        """Cancel whatever is awaited inside the block when the token is cancelled.

        ::

            with token.scope():
                response = await client.get(url)

        An anyio :class:`~anyio.CancelScope` runs underneath. When the token is cancelled, the
        await in progress is cancelled, and the block raises :class:`OperationCancelled` (instead
        of the loop's cancellation exception). If the token is already cancelled, the block is
        cancelled at its first await. Code between awaits runs on: check the token there if it
        matters. Any other cancellation (a timeout, a cancelled task group) passes through
        untouched. Yields the cancel scope, for its ``deadline`` or ``shield``.

        :raises OperationCancelled: if the token cancelled an await inside the block.
        :raises RuntimeError: if no asyncio or trio loop runs in this thread.
        """
        return _waiting.scope(self)

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, cancelling it once if the token is cancelled meanwhile.

        ::

            rows = await token.run(conn.fetch("SELECT ..."))

        For calls that clean up after their own cancellation, database drivers above all: on
        asyncio the awaitable runs in a task that the token cancels exactly once, so the
        driver's own "send the server a cancel request, then wait for it" is not cancelled
        again (as every await inside :meth:`scope` would be), and the statement stops on the
        server with the connection still usable. The token is checked first: if it is already
        cancelled, a coroutine is closed without ever starting. If the awaited call finishes
        despite the cancel, its result is returned. A cancellation of the caller (a timeout,
        the server shutting down) is passed on to the task once and waited for (shielded)
        before it propagates. On trio this is ``with token.scope(): return await awaitable``.

        :raises OperationCancelled: if the token was cancelled before the call or cancelled
            it; chained to the driver's error when the driver turned the cancellation into one.
        :raises RuntimeError: if no asyncio or trio loop runs in this thread.
        """
        return await _interrupt.run(self, awaitable)

    def cancel_on(
        self,
        cancel: Callable[[], object],
        *,
        translate: tuple[type[BaseException], ...] = (),
        repeat: float = 0.02,
    ) -> contextlib.AbstractContextManager[None]:
        """Call the blocking ``cancel`` function while the block runs, if the token is cancelled.

        ::

            with token.cancel_on(conn.cancel_safe, translate=(QueryCanceled,)):
                cur.execute("SELECT ...")

        For ``def`` code whose work has a cancel function of its own (psycopg's
        ``Connection.cancel_safe``, ``sqlite3.Connection.interrupt``). The token is checked
        on entry. Once it is cancelled, ``cancel`` runs in a thread of its own (never on the
        event loop, which it would block), and again after ``repeat`` seconds (the pause
        doubling up to 1 s) until the block ends: a cancel that arrived before the statement
        reached the server is then followed by one that stops it. Leaving the block waits for
        a ``cancel`` call in progress to return, so that no cancel is still on its way when
        the connection serves another statement (a PostgreSQL cancel targets a connection,
        not a statement). A ``cancel`` that raises is logged and not called again.

        :param translate: the errors ``cancel`` makes the work raise; one of them leaving the
            block after the token was cancelled becomes :class:`OperationCancelled` (chained).
            Raised while the token is not cancelled (a ``statement_timeout``), it propagates as
            it is.
        :param repeat: seconds before the first repetition of ``cancel``; > 0.
        :raises OperationCancelled: on entry if the token is already cancelled, or as above.
        :raises ValueError: if ``repeat`` is not > 0.
        """
        return _interrupt.cancel_on(self, cancel, translate, repeat)

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """Block this thread until the token is cancelled or ``timeout`` seconds pass.

        For ``def`` code running in a worker thread (never call it on the event loop: it blocks
        the loop). Like .NET's ``token.WaitHandle.WaitOne(timeout)``.

        :returns: whether the token is cancelled.
        """
        return _waiting.wait_blocking(self, timeout)

    def sleep_blocking(self, seconds: float) -> None:
        """Block this thread for ``seconds``, unless the token is cancelled first.

        The ``time.sleep()`` replacement in synchronous loops that run in a worker thread.

        :raises OperationCancelled: at once if the token is already cancelled, otherwise as soon
            as it is cancelled during the sleep; or the host task's cancellation, as
            :meth:`throw_if_cancellation_requested` says.
        """
        check_seconds("sleep_blocking", seconds)
        if self.wait_blocking(seconds):
            raise cancelled(self)

    # -- changed by the source and by a request's state: the bodies are _lifecycle's ---------

    def _cancel(self, reason: object, origin: CancellationToken | None) -> None:
        _lifecycle.cancel(self, reason, origin)

    def _mark_cancelled(
        self, reason: object, origin: CancellationToken | None
    ) -> Callable[[], None] | None:
        return _lifecycle.mark_cancelled(self, reason, origin)

    def _cancel_after(self, delay: float) -> None:
        _lifecycle.cancel_after(self, delay)

    def _close(self) -> None:
        _lifecycle.close(self)


CancellationToken.NONE = CancellationToken()
CancellationToken.NONE._close()
