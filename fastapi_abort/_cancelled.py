"""What a cancelled token raises: :class:`OperationCancelled`, or the host task's cancellation.

Every check of a token (``throw_if_cancellation_requested()``, the sleeps, ``scope()``,
``run()``, ``cancel_on()``) raises what :func:`cancelled` makes.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

import anyio.from_thread

if TYPE_CHECKING:
    from ._token import CancellationToken


class OperationCancelled(Exception):
    """Raised when an operation stops because its token was cancelled.

    It subclasses :class:`Exception` (not ``BaseException``) on purpose, so FastAPI exception
    handlers see it. It is *not* the event loop's own cancellation (``asyncio.CancelledError``,
    ``trio.Cancelled``): those are never turned into this exception, and should never be
    swallowed.

    :ivar token: the token whose cancellation stopped the operation.
    :ivar reason: that token's :attr:`CancellationToken.reason` when this was raised.
    """

    # Named where users import it from, in tracebacks, in an OpenTelemetry span's error.type
    # and in Sentry's grouping: fastapi_abort.OperationCancelled, not this private module.
    __module__ = "fastapi_abort"

    def __init__(self, token: CancellationToken, message: str | None = None) -> None:
        self.token = token
        self.reason = token.reason
        super().__init__(message or f"The operation was cancelled ({self.reason})")


def cancelled(token: CancellationToken) -> BaseException:
    """The exception a check of the cancelled ``token`` raises: :class:`OperationCancelled`.

    Except in a worker thread (``def`` code run by ``anyio.to_thread``) whose host task is being
    cancelled itself: then that cancellation, as the code would meet it without the token.
    Starlette cancels the task that iterates a ``def`` generator when the client of its
    ``StreamingResponse`` leaves, and the thread's ``OperationCancelled`` would escape the
    response in place of it: the inner middleware would see an error, and the response's
    background task would not run. (A thread of a host that nothing cancels, a ``def``
    endpoint's, gets ``OperationCancelled``; so does a thread of another kind.)
    """
    if threading.current_thread() is not threading.main_thread():
        with contextlib.suppress(RuntimeError):  # raised outside an anyio worker thread
            anyio.from_thread.check_cancelled()  # raises the host's cancellation, if any
    return OperationCancelled(token)
