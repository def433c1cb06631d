"""The handle of a callback registered on a token, to take it back."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, final

from ._lifecycle import lock
from ._reason import NOT_CANCELLED

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
