"""One call to set everything up."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._handler import operation_cancelled_handler
from ._middleware import Config, RequestAbortedMiddleware
from ._token import OperationCancelled

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp

TOO_LATE = (
    "install(app) must be called before the app serves its first request: its middleware stack "
    "is already built. Call it right after creating the app."
)
TWICE = (
    "install(app) was already called for this app, or an OperationCancelled exception handler "
    "is already registered. Call it once."
)


def install(
    app: Starlette,
    *,
    status_code: int = 499,
    log_level: int | str = logging.INFO,
    message: str = "Client Closed Request",
    watcher_delay: float = 0.001,
) -> None:
    """Set up fastapi-abort on a FastAPI (or Starlette) app: the middleware and the handler.

    The middleware wraps the whole app, outside every other middleware (Starlette's error
    middleware included), whatever order middleware is added in: it must be the only reader of
    the server's ``receive``. The :class:`OperationCancelled` handler turns a cancellation caused
    by the client leaving into one quiet log line.

    :param status_code: status of the response and log line for a request whose client left.
    :param log_level: level of that log line, an int or a name (``logging.INFO``).
    :param message: the words after the status code (``"Client Closed Request"``).
    :param watcher_delay: how long a request that asked for its token runs before a watcher
        starts listening for its disconnect (1 ms; see :class:`RequestAbortedMiddleware`).
    :raises RuntimeError: if the app has already started, or ``install`` was already called.
    """
    # Bad options fail here, not at the first request.
    Config.of(status_code, log_level, message, watcher_delay)
    if app.middleware_stack is not None:
        raise RuntimeError(TOO_LATE)
    if OperationCancelled in app.exception_handlers:
        raise RuntimeError(TWICE)
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return RequestAbortedMiddleware(
            build(),
            status_code=status_code,
            log_level=log_level,
            message=message,
            watcher_delay=watcher_delay,
        )

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    app.add_exception_handler(OperationCancelled, operation_cancelled_handler)
