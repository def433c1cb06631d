"""Registering a callback on a token, and the handle that takes it back."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, final

from ._lifecycle import lock
from ._reason import NOT_CANCELLED
from ._wake import run_callback

if TYPE_CHECKING:
    from ._token import CancellationToken


@final
class CancellationTokenRegistration:
    """The handle :meth:`CancellationToken.register` returns; undo it with :meth:`unregister`.

    Also a context manager: leaving the ``with`` block unregisters the callback.
    """

    __slots__ = ("_callback", "_token")

    def __init__(self, token: CancellationToken | None, callback: Callable[[], object]) -> None:
        self._token = token
        self._callback = callback

    def unregister(self) -> bool:
        """Remove the callback so that it never runs.

        Returns ``True`` if it was removed before it ran, ``False`` if it has already run, is
        running right now in another thread, or will never run (the token can no longer be
        cancelled). Idempotent; callable from any thread.
        """
        token = self._token
        if token is None:
            return False
        self._token = None
        with lock:
            callbacks = token._callbacks
            # The marker as the default: only a registration still in the dict pops None.
            return callbacks is not None and callbacks.pop(self, NOT_CANCELLED) is None

    def __enter__(self) -> CancellationTokenRegistration:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unregister()


def register(
    token: CancellationToken, callback: Callable[[], object]
) -> CancellationTokenRegistration:
    """CancellationToken.register()."""
    if token._deadline is not None or token._parents:
        # A passed deadline, this token's or a parent's, cancels now.
        token.is_cancellation_requested  # noqa: B018
    # Made before taking the lock: an allocation may start a garbage collection, whose
    # finalizers may cancel a token, and the lock is not reentrant.
    registration = CancellationTokenRegistration(token, callback)
    with lock:
        callbacks = token._callbacks
        if callbacks is not None:
            callbacks[registration] = None
            return registration
    registration._token = None
    if token._reason is not NOT_CANCELLED:
        run_callback(callback)
    return registration
