"""The exception handler: a cancelled request ends as one quiet line, not an error."""

from __future__ import annotations

import logging

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from ._cancelled import OperationCancelled
from ._endings import WebSocketAnswer, answer, deadline_problem, printable, why_cancelled
from ._reason import CancellationReason
from ._state import SCOPE_KEY, RequestState

logger = logging.getLogger("fastapi_abort")

#: Logged at WARNING for a deadline of a token that is not the request's own (method, path, the
#: exception).
DEADLINE_LOG = "%s %s: 504 Gateway Timeout: %s"
NOT_THE_REQUEST_LOG = (
    "%s %s: 500 Internal Server Error: OperationCancelled (%s) escaped the endpoint, and the "
    "request's client has not left. Catch it where the token is cancelled."
)


async def operation_cancelled_handler(request: HTTPConnection, exc: Exception) -> Response:
    """Exception handler for :class:`OperationCancelled`, for ``app.add_exception_handler``.

    - Cancelled because this request's client left (the request's token, or a token linked to
      it): an empty 499 response that nobody will read. Nothing is logged here:
      ``RequestAbortedMiddleware`` logs one quiet line for the request when the app has finished
      (``fastapi_abort`` logger, INFO, no traceback, by default).
    - Cancelled by a deadline (the request's own, or any token's): the client is still there;
      it gets a 504 with an RFC 9457 ``application/problem+json`` body, logged once at WARNING.
    - Cancelled because the server shuts down (the request's token, or one linked with the
      app's stopping token by ``stop_on_shutdown``): a 503 with problem details and
      ``Retry-After``, logged once at INFO; a WebSocket is closed with code 1001.
    - Anything else (a token of your own cancelled explicitly): a 500, logged at ERROR with the
      traceback, as for any other unhandled exception.

    The status code, level and words of the first case come from ``install()`` or the
    middleware's options.

    On a WebSocket: nothing is sent when the peer left; otherwise the connection is closed with
    code 1011, and logged as above.
    """
    if not isinstance(exc, OperationCancelled):  # pragma: no cover - registered for it only
        raise exc
    state: RequestState | None = request.scope.get(SCOPE_KEY)
    reason = None if state is None else why_cancelled(state, exc)
    websocket = request if isinstance(request, WebSocket) else None
    if state is not None and reason is not None:
        # The middleware logs the line once the app has finished, and calls the hook.
        response = answer(state, reason)
        if websocket is None:
            return response
        # Starlette before 1.0 ignores what a WebSocket's handler returns, and later versions
        # run it: answer here, and return what sends nothing more.
        await response(websocket.scope, websocket.receive, websocket.send)
        return WebSocketAnswer(None)
    method = request.scope.get("method", "WEBSOCKET")
    path = printable(request.scope.get("path", ""))
    if exc.reason is CancellationReason.DEADLINE:
        logger.warning(DEADLINE_LOG, method, path, exc)
        response = deadline_problem(None)
    else:
        logger.error(NOT_THE_REQUEST_LOG, method, path, exc.reason, exc_info=exc)
        response = JSONResponse({"detail": "Internal Server Error"}, status_code=500)
    if websocket is not None:
        await websocket.close(1011)
        return WebSocketAnswer(None)
    return response


async def client_disconnect_handler(request: HTTPConnection, exc: Exception) -> Response:
    """Exception handler for Starlette's ``ClientDisconnect`` (``install()`` adds it).

    ``request.stream()``, ``body()`` and ``form()`` raise it when the client leaves during the
    upload. When the middleware saw that client leave, the request ends as any other whose
    client left: an empty 499 and the one quiet line. Otherwise it is re-raised, untouched.
    """
    state: RequestState | None = request.scope.get(SCOPE_KEY)
    if state is None or not state.aborted:
        raise exc
    return Response(status_code=state.config.status_code)
