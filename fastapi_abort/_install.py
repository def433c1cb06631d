"""One call to set everything up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import ClientDisconnect

from ._dependency import preemptive as preemptive_dependency
from ._handler import client_disconnect_handler, operation_cancelled_handler
from ._middleware import AbortedRequest, Config, RequestAbortedMiddleware
from ._token import OperationCancelled

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp

TOO_LATE = (
    "install(app) must be called before the app serves its first request: its middleware stack "
    "is already built. Call it right after creating the app."
)
PREEMPTIVE_NEEDS_FASTAPI = (
    "install(app, preemptive=True) needs a FastAPI app (it adds Depends(preemptive) to every "
    "route), got {type}. Wrap the awaits in `with token.scope():` instead."
)
PREEMPTIVE_TOO_LATE = (
    "install(app, preemptive=True) must be called before routes are added ({count} already "
    "are), so that every route gets it. Call it right after creating the app, or pass "
    "dependencies=[Depends(preemptive)] to FastAPI()."
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
    deadline: float | None = None,
    preemptive: bool = False,
    on_abort: Callable[[AbortedRequest], object] | None = None,
) -> None:
    """Set up fastapi-abort on a FastAPI (or Starlette) app: the middleware and the handler.

    The middleware wraps the whole app, outside every other middleware, whatever order
    middleware is added in: it must be the only reader of the server's ``receive``. It takes
    the place of Starlette's outermost ``ServerErrorMiddleware``, which still answers an
    exception that escapes the app (its 500, the app's handler for ``Exception``, its debug
    page), and is then run around that exception only. The :class:`OperationCancelled`
    handler turns a cancellation caused by the client leaving into one quiet log line.

    :param status_code: status of the response and log line for a request whose client left.
    :param log_level: level of that log line, an int or a name (``logging.INFO``).
    :param message: the words after the status code (``"Client Closed Request"``).
    :param watcher_delay: how long a request that asked for its token runs before a watcher
        starts listening for its disconnect (1 ms; see :class:`RequestAbortedMiddleware`).
    :param deadline: seconds after which every request's token is cancelled with reason
        ``DEADLINE`` (``None``: no deadline); an escaping cancellation then becomes a 504.
        Routes change it with the :func:`deadline` dependency.
    :param preemptive: make every route preemptive (see :func:`preemptive`): cancelled at its
        next ``await`` when the token is cancelled. Cooperative (``False``) by default.
    :param on_abort: called once per request that its token ended, with an
        :class:`AbortedRequest` (see :class:`RequestAbortedMiddleware`).
    :raises RuntimeError: if the app has already started, ``install`` was already called, or
        ``preemptive=True`` comes after routes were added.
    """
    # Bad options fail here, not at the first request.
    Config.of(status_code, log_level, message, watcher_delay, deadline, on_abort)
    if app.middleware_stack is not None:
        raise RuntimeError(TOO_LATE)
    if OperationCancelled in app.exception_handlers:
        raise RuntimeError(TWICE)
    if preemptive:
        _make_preemptive(app)
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        stack = build()
        options: dict[str, Any] = {
            "status_code": status_code,
            "log_level": log_level,
            "message": message,
            "watcher_delay": watcher_delay,
            "deadline": deadline,
            "on_abort": on_abort,
        }
        # Starlette's stack starts with its ServerErrorMiddleware: this middleware takes its
        # place and does its work (see RequestAbortedMiddleware.fused()). Only that exact class:
        # a subclass may do more than this knows of.
        if type(stack) is ServerErrorMiddleware:
            middleware = RequestAbortedMiddleware.fused(stack, **options)
        else:
            middleware = RequestAbortedMiddleware(stack, **options)
        # The bound method, not the instance: Starlette calls the stack from Python code, and
        # a bound Python function is called without leaving the interpreter loop, where an
        # instance is called through C (type(...).__call__): about 900 instructions less on
        # every request.
        return middleware.__call__

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    app.add_exception_handler(OperationCancelled, operation_cancelled_handler)
    if ClientDisconnect not in app.exception_handlers:
        app.add_exception_handler(ClientDisconnect, client_disconnect_handler)


def _make_preemptive(app: Starlette) -> None:
    from fastapi import Depends, FastAPI
    from fastapi.routing import APIRoute

    if not isinstance(app, FastAPI):
        raise TypeError(PREEMPTIVE_NEEDS_FASTAPI.format(type=type(app).__name__))
    routes = [route for route in app.router.routes if isinstance(route, APIRoute)]
    if routes:
        raise RuntimeError(PREEMPTIVE_TOO_LATE.format(count=len(routes)))
    # First, so that every other dependency of every route runs inside its cancel scope.
    app.router.dependencies.insert(0, Depends(preemptive_dependency))
