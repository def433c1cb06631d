"""How a token's state changes: cancelled at most once, given a deadline, closed for good.

The token only reads its state; these are what its source (and a request's state) change it
with, through the token's ``_cancel``, ``_mark_cancelled``, ``_cancel_after`` and ``_close``.
Every change is made under :data:`lock`, and whatever it wakes (callbacks, waiters, a timer to
stop) is called after the lock is released.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._backend import call_later
from ._reason import NOT_CANCELLED, CancellationReason
from ._wake import run_callback

if TYPE_CHECKING:
    from ._token import CancellationToken

# One lock for every token: each critical section is a few attribute writes, so sharing it costs
# nothing measurable and saves a lock object per request.
lock = threading.Lock()


def cancel(
    token: CancellationToken,
    reason: object,
    origin: CancellationToken | None,
    ticket: object = None,
) -> None:
    """Cancel ``token``. ``origin``: the token that was cancelled first, if not this one (``None``
    for this one: a token that referred to itself would be a reference cycle). ``ticket``: see
    :func:`mark_cancelled`."""
    wake = mark_cancelled(token, reason, origin, ticket)
    if wake is not None:
        wake()


def mark_cancelled(
    token: CancellationToken,
    reason: object,
    origin: CancellationToken | None,
    ticket: object = None,
) -> Callable[[], None] | None:
    """Cancel ``token``, and return what wakes its waiters and runs its callbacks (None if it was
    cancelled or closed already): everybody who looks sees it cancelled at once, and whoever
    waits on it wakes when that is called. With a ``ticket`` (a deadline's timer), nothing
    happens unless it is the ticket of the token's current deadline."""
    with lock:
        if token._reason is not NOT_CANCELLED or token._closed:
            return None
        if ticket is not None and ticket is not token._timer_ticket:
            return None  # a timer whose deadline was replaced: checked under the lock
        token._reason = reason
        token._origin = origin
        callbacks, token._callbacks = token._callbacks, None
        event, timer = token._event, token._timer
        token._timer = None

    def wake() -> None:
        if timer is not None:
            timer()
        if event is not None:
            event.set()
        if callbacks:
            for registration in callbacks:
                # Detach first: unregister() must report False from now on.
                registration._token = None
                run_callback(registration._callback)

    return wake


def deadline_passed(token: CancellationToken) -> None:
    """Cancel if the deadline has passed, read or not: a timer that could not run yet (a busy
    event loop) must not make a passed deadline depend on whether anybody looked."""
    deadline = token._deadline
    if deadline is not None and time.monotonic() >= deadline:
        cancel(token, CancellationReason.DEADLINE, None)


def cancel_after(token: CancellationToken, delay: float) -> None:
    """CancellationTokenSource.cancel_after(), for a ``delay`` already checked."""
    # A deadline that passed unread still counts: it is not replaced by a later one.
    deadline_passed(token)
    if delay == math.inf:
        with lock:
            old, token._timer = token._timer, None
            token._deadline = None
            token._timer_ticket = None
        if old is not None:
            old()
        return
    ticket = object()

    def fire() -> None:
        # Only the timer of the latest deadline may cancel: an earlier one that was replaced
        # (and raced its own cancellation) must not.
        cancel(token, CancellationReason.DEADLINE, None, ticket)

    with lock:
        if token._reason is not NOT_CANCELLED or token._closed:
            return
        old, token._timer = token._timer, None
        token._deadline = time.monotonic() + delay
        token._timer_ticket = ticket
    if old is not None:
        old()
    # Started outside the lock (it allocates: see CancellationToken.register()). The ticket says
    # whether this is still the current deadline once it is kept; a replaced one only cancels.
    timer: Callable[[], object] | None = call_later(delay, fire) or _timer_thread(delay, fire)
    with lock:
        if token._timer_ticket is ticket and token._reason is NOT_CANCELLED and not token._closed:
            token._timer, timer = timer, None
    if timer is not None:
        timer()  # replaced, cancelled or closed meanwhile


def time_remaining(token: CancellationToken) -> float | None:
    """Seconds until the nearest deadline of ``token`` and the tokens it is linked to."""
    if token._reason is not NOT_CANCELLED:
        return 0.0
    deadline, parents = token._deadline, token._parents  # (read once, as in the token)
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    for parent in parents:
        inherited = time_remaining(parent)
        if inherited is not None and (remaining is None or inherited < remaining):
            remaining = inherited
    return remaining


def close(token: CancellationToken) -> None:
    """CancellationTokenSource.close(), for the token: if it was not cancelled, it never will
    be. Idempotent, and cheap when repeated."""
    if token._closed:
        # Closed for good (it never reverts, so reading it without the lock is safe), and
        # nothing is left to release: a request's token is closed twice, at the end of its
        # response and when the app returns.
        return
    if token._deadline is not None:  # most tokens have none: no call for them
        deadline_passed(token)
    with lock:
        token._closed = True
        token._callbacks = None
        token._parents = ()
        timer, token._timer = token._timer, None
        token._deadline = None
    if timer is not None:
        timer()


def _timer_thread(delay: float, fire: Callable[[], None]) -> Callable[[], object]:
    # The deadline's timer where no asyncio loop runs in this thread (a plain thread, trio).
    thread = threading.Timer(delay, fire)
    thread.daemon = True
    thread.start()
    return thread.cancel
