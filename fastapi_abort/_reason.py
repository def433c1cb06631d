"""Why a token was cancelled: the reasons of its own, and the marker of a token not cancelled."""

from __future__ import annotations

import enum


class CancellationReason(enum.Enum):
    """Why a token was cancelled: compare with ``is``, e.g. ``token.reason is DEADLINE``."""

    #: The HTTP client went away before the response was complete.
    CLIENT_DISCONNECTED = "client disconnected"
    #: A deadline set with ``cancel_after()`` or ``CancellationTokenSource(timeout=...)`` passed.
    DEADLINE = "deadline"
    #: ``CancellationTokenSource.cancel()`` was called without a reason.
    EXPLICIT = "explicit"
    #: The server cancelled the request while it ran, as servers do when they shut down and
    #: their graceful timeout runs out.
    SHUTDOWN = "shutdown"

    def __str__(self) -> str:
        return self.value


class _NotCancelled(enum.Enum):
    NOT_CANCELLED = enum.auto()


#: What a token holds as its reason while it is not cancelled (``token.reason`` reads it as
#: ``None``).
NOT_CANCELLED = _NotCancelled.NOT_CANCELLED
