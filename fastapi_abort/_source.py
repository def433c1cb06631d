"""The source: owns a token, and is the only public way to cancel it."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import final

from ._checks import is_seconds
from ._reason import CancellationReason
from ._registration import CancellationTokenRegistration
from ._token import CancellationToken

NOT_CANCELLABLE_SOURCE = (
    "CancellationTokenSource() takes CancellationToken parents, got {type}. "
    "Pass tokens (source.token), not sources."
)
BAD_DELAY = (
    "cancel_after() needs a delay in seconds >= 0 (math.inf removes the deadline), got {delay!r}"
)


@final
class CancellationTokenSource:
    """Owns a :class:`CancellationToken` and is the only way to cancel it.

    ``CancellationTokenSource(*parents, timeout=None)`` makes a source whose token is also
    cancelled when any of ``parents`` is (keeping that parent's reason), and after ``timeout``
    seconds (reason :attr:`CancellationReason.DEADLINE`).

    Close the source when its work is done (``close()``, or use it as a context manager): that
    unlinks it from its parents, stops its timer and drops its callbacks, so a long-lived parent
    does not keep every child alive. After ``close()``, a token that was not cancelled can never
    be. Every method is safe to call from any thread.
    """

    __slots__ = ("_links", "token")

    def __init__(self, *parents: CancellationToken, timeout: float | None = None) -> None:
        #: The token this source controls. The same object for the source's whole life.
        self.token = token = CancellationToken()
        # A tuple, and the shared empty one without parents (as for every request's token).
        self._links: tuple[CancellationTokenRegistration, ...] = ()
        if parents:
            for parent in parents:
                if not isinstance(parent, CancellationToken):
                    raise TypeError(NOT_CANCELLABLE_SOURCE.format(type=type(parent).__name__))
            live = tuple(parent for parent in parents if parent.can_be_cancelled)
            token._parents = live
            # Cancelling a child from its parent must not keep the child alive through the
            # parent: the callback holds the child token only, never the source.
            self._links = tuple(parent.register(_link(parent, token)) for parent in live)
        if timeout is not None:
            self.cancel_after(timeout)

    def __repr__(self) -> str:
        return f"<CancellationTokenSource token={self.token!r}>"

    @property
    def is_cancellation_requested(self) -> bool:
        """Same as ``self.token.is_cancellation_requested``."""
        return self.token.is_cancellation_requested

    def cancel(self, reason: object = CancellationReason.EXPLICIT) -> None:
        """Cancel the token: set its reason, run its callbacks, wake its waiters.

        Idempotent: only the first call has any effect, and later reasons are ignored. Callable
        from any thread; async waiters are woken on their own event loop without blocking the
        caller. Callbacks run in the calling thread before ``cancel`` returns. Does nothing after
        :meth:`close`.

        :param reason: what :attr:`CancellationToken.reason` will report; a
            :class:`CancellationReason` or any object of yours (not ``None``).
        """
        if reason is None:
            raise ValueError("cancel() needs a reason that is not None")
        self.token._cancel(reason, None)

    def cancel_after(self, delay: float) -> None:
        """Cancel the token with reason :attr:`CancellationReason.DEADLINE` in ``delay`` seconds.

        Calling it again replaces the earlier deadline; ``math.inf`` removes it (like .NET's
        ``CancelAfter(Timeout.Infinite)``). The deadline is checked on every read of the token's
        state as well, so a loop that never yields to the event loop still sees it. The timer
        runs on the current asyncio loop if there is one, else in a timer thread. Does nothing
        once the token is cancelled or the source closed.
        """
        if not is_seconds(delay, inf=True):
            raise ValueError(BAD_DELAY.format(delay=delay))
        self.token._cancel_after(delay)

    def close(self) -> None:
        """Release the source: unlink from parents, stop the timer, drop the callbacks.

        Idempotent. The token keeps its state; if it was not cancelled, it never will be.
        """
        self.token._close()
        links, self._links = self._links, ()
        for link in links:
            link.unregister()

    def __enter__(self) -> CancellationTokenSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _link(parent: CancellationToken, child: CancellationToken) -> Callable[[], None]:
    def cancel_child() -> None:
        child._cancel(parent._reason, parent._origin or parent)

    return cancel_child
