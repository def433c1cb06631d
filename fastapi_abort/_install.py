"""One call to set everything up."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import ClientDisconnect

from ._cancelled import OperationCancelled
from ._config import BAD_STOPPING, Config, Options
from ._dependency import preemptive as preemptive_dependency
from ._handler import client_disconnect_handler, operation_cancelled_handler
from ._middleware import RequestAbortedMiddleware
from ._stopping import install_stopping

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

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
    preemptive: bool = False,
    stopping: bool = False,
    **options: Unpack[Options],
) -> None:
    """Set up fastapi-abort on a FastAPI (or Starlette) app: the middleware and the handler.

    The middleware goes right inside Starlette's outermost ``ServerErrorMiddleware``, outside
    every other middleware, whatever order middleware is added in, and whatever else wraps the
    app's ``build_middleware_stack`` before or after this call (OpenTelemetry's
    ``instrument_app`` does): it must be the only reader of the server's ``receive``, and
    ``ServerErrorMiddleware`` never reads it. The :class:`OperationCancelled` handler turns a
    cancellation caused by the client leaving into one quiet log line, and a passed deadline
    into a 504.

    :param preemptive: make every route preemptive (see :func:`preemptive`): cancelled at its
        next ``await`` when the token is cancelled. Cooperative (``False``) by default.
    :param stopping: give the app a token that trips with reason ``SHUTDOWN`` as soon as the
        server starts to shut down (see :func:`stopping_token` and :func:`stop_on_shutdown`),
        chained onto the server's SIGINT and SIGTERM handlers at the lifespan startup. Off
        (``False``) by default: the app's lifespan and signals are left alone.
    :param options: the middleware's options (:class:`Options`): ``status_code`` (499),
        ``log_level`` (``logging.INFO``), ``message`` (``"Client Closed Request"``),
        ``watcher_delay`` (0.001 s), ``deadline`` (``None``), ``on_abort`` (``None``).
    :raises TypeError: at once, for an option of the wrong type, or an unknown one, or a
        ``stopping`` that is not a bool.
    :raises ValueError: at once, for a value out of range.
    :raises RuntimeError: if the app has already started, ``install`` was already called, or
        ``preemptive=True`` comes after routes were added.
    """
    Config.of("install()", options)  # bad options fail here, not at the first request
    if app.middleware_stack is not None:
        raise RuntimeError(TOO_LATE)
    if OperationCancelled in app.exception_handlers:
        raise RuntimeError(TWICE)
    if not isinstance(stopping, bool):
        raise TypeError(BAD_STOPPING.format(value=stopping))
    if preemptive:
        _make_preemptive(app)
    around = install_stopping(app).around if stopping else _as_is
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        stack = build()
        if isinstance(stack, ServerErrorMiddleware):
            # Inside it, not around it: code that looks for it at the top of the stack
            # (OpenTelemetry's instrument_app, called after install()) finds it there, and
            # what it wraps is still ours.
            stack.app = RequestAbortedMiddleware(around(stack.app), **options)
            return stack
        return RequestAbortedMiddleware(around(stack), **options)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    app.add_exception_handler(OperationCancelled, operation_cancelled_handler)
    if ClientDisconnect not in app.exception_handlers:
        app.add_exception_handler(ClientDisconnect, client_disconnect_handler)


def _as_is(app: ASGIApp) -> ASGIApp:
    return app


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
