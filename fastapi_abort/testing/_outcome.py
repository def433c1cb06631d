"""What happened to one request (:class:`RequestOutcome`), and the quiet 499 line it reports.

The catcher hands each quiet line to the request it belongs to through a context variable that
the exchange sets while its app runs: worker threads the app starts copy the context, so a line
logged there is caught too.
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import Message

from .._endings import ABORTED_LOG
from .._reason import CancellationReason
from .._token import CancellationToken

if TYPE_CHECKING:
    from ._exchange import _Exchange

_logger = logging.getLogger("fastapi_abort")


@dataclass(frozen=True)
class RequestOutcome:
    """What happened to one request sent by :class:`AbortingClient`.

    Everything the app sent is recorded, also what it sent after the client left (a real
    server would drop it): that is how the quiet 499 shows in :attr:`status`.

    :ivar request: the request line, such as ``"GET /slow?n=1"``.
    :ivar status: the status of the ``http.response.start`` the app sent, or None if it sent
        none.
    :ivar headers: the response headers (empty if no response started).
    :ivar chunks: the body of each ``http.response.body`` message, in order, empty ones
        included.
    :ivar messages: every message the app sent, in order.
    :ivar response_complete: the app sent the last body message of its response.
    :ivar client_left: the client left while the app ran, before or after the response was
        complete.
    :ivar client_left_before_completion: the client left before the response was complete: what
        a server reports as a disconnect. Whether the app noticed is another matter: see
        :attr:`token_tripped` and :attr:`aborted_log`.
    :ivar left_after: seconds from the start of the request to the client leaving, or None.
    :ivar token: the request's token, or None if nobody in the app asked for it.
    :ivar aborted_log: the quiet ``fastapi_abort`` log record (``"GET /slow: 499 Client Closed
        Request after 0.051 s"``) that the middleware writes when it saw the client leave before
        the response was complete, or None. Captured whatever the logging configuration.
    :ivar request_body_read: bytes of the request body delivered to the app (or to the
        middleware's watcher, which holds one message for the app).
    :ivar elapsed: seconds from the start of the request to the app's return.
    :ivar exception: what the app raised, when the client was made with
        ``raise_app_exceptions=False`` (otherwise it is raised), or None.
    """

    request: str
    status: int | None
    headers: Headers
    chunks: tuple[bytes, ...]
    messages: tuple[Message, ...]
    response_complete: bool
    client_left: bool
    client_left_before_completion: bool
    left_after: float | None
    token: CancellationToken | None
    aborted_log: logging.LogRecord | None
    request_body_read: int
    elapsed: float
    exception: Exception | None = None

    @property
    def body(self) -> bytes:
        """The response body: all :attr:`chunks` joined."""
        return b"".join(self.chunks)

    @property
    def token_tripped(self) -> bool:
        """The request's token was cancelled because the client left.

        False if nobody asked for the token: the client may still have left
        (:attr:`client_left_before_completion`), unnoticed.
        """
        return self.reason is CancellationReason.CLIENT_DISCONNECTED

    @property
    def reason(self) -> object | None:
        """Why the request's token was cancelled (a :class:`~fastapi_abort.CancellationReason`),
        or None if it was not, or nobody asked for it."""
        token = self.token
        return None if token is None else token.reason


# The request whose app runs in this task (and in the worker threads it starts).
_current: ContextVar[_Exchange | None] = ContextVar("fastapi_abort.testing", default=None)


class _QuietLineCatcher(logging.Filter):
    """Catches each request's quiet line, whatever the logging configuration.

    While requests run, the ``fastapi_abort`` logger is opened to every level, so the line is
    always created; this filter, on that logger, hands it to the request it belongs to, and lets
    through to the handlers only what the logger's own level would have let through: the rest
    of the logging setup sees no difference.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._users = 0
        self._saved_level = logging.NOTSET

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._saved_level = _logger.level
                _logger.setLevel(1)
                _logger.addFilter(self)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                _logger.removeFilter(self)
                if _logger.level == 1:  # unless somebody set a level of their own meanwhile
                    _logger.setLevel(self._saved_level)

    def filter(self, record: logging.LogRecord) -> bool:
        exchange = _current.get()
        if exchange is not None and record.msg == ABORTED_LOG and exchange.aborted_log is None:
            exchange.aborted_log = record
        level = self._saved_level
        if level == logging.NOTSET:
            parent = _logger.parent
            level = logging.WARNING if parent is None else parent.getEffectiveLevel()
        return record.levelno >= level


_catcher = _QuietLineCatcher()
