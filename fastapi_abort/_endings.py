"""How a request ended: whose cancellation an exception is, the 499, 504 and 503, the log lines.

The middleware and the exception handler both end requests; this module decides for both, so a
request is answered, logged and reported to the ``on_abort`` hook in one way, whoever saw its end.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ._cancelled import OperationCancelled
from ._reason import CancellationReason

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # anyio depends on it below 3.11

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from ._state import RequestState

logger = logging.getLogger("fastapi_abort")

#: The quiet line logged once per request whose client went away before the response was
#: complete, when the app has finished (method, path, status code, message, elapsed seconds).
ABORTED_LOG = "%s %s: %d %s after %.3f s"
#: Logged at WARNING once per request that its deadline ended with a 504 (method, path,
#: deadline, elapsed seconds).
DEADLINE_LOG = "%s %s: 504 Gateway Timeout: its %.3f s deadline passed, after %.3f s"
#: Logged at INFO once per request that the server's shutdown ended with a 503 (method, path,
#: elapsed seconds).
SHUTDOWN_LOG = "%s %s: 503 Service Unavailable: the server is shutting down, after %.3f s"
#: The 503's ``Retry-After`` (seconds): the client comes back once the server was replaced.
SHUTDOWN_RETRY_AFTER = 1
#: The close of a WebSocket that the server's shutdown ended ("going away", RFC 6455).
GOING_AWAY = 1001
HOOK_FAILED = "The on_abort hook %r raised; the request was not affected"

_CLIENT = CancellationReason.CLIENT_DISCONNECTED
_DEADLINE = CancellationReason.DEADLINE
_SHUTDOWN = CancellationReason.SHUTDOWN


@dataclass(frozen=True, slots=True)
class AbortedRequest:
    """What the ``on_abort`` hook receives, once per request that its token ended.

    The last five fields say what the app had handed to the server when the request ended: for
    billing and audit of a streamed answer whose client left. They count what went to the
    server, not what reached the client (a proxy or the kernel may still have held the last
    bytes); fastapi-abort's own 499, 504 or 503 is not counted.

    :ivar method: the HTTP method.
    :ivar path: the path, without the query string (which may hold secrets), with control
        characters escaped.
    :ivar status_code: the status the request ended with: 499 (or the configured status) when
        the client left, 504 when the deadline passed, 503 when the server's shutdown ended it.
    :ivar elapsed: seconds from the request's start to the end of the app's work: the seconds of
        work the request was cut short at.
    :ivar reason: :attr:`CancellationReason.CLIENT_DISCONNECTED`,
        :attr:`CancellationReason.DEADLINE` or :attr:`CancellationReason.SHUTDOWN`.
    :ivar response_started: the app's response had started (its status went to the server).
    :ivar status_sent: the status the app's response started with; None if it had not started.
    :ivar body_bytes: body bytes of the app's ``http.response.body`` messages (a ``pathsend``
        or ``zerocopysend`` body is not counted).
    :ivar body_messages: the app's ``http.response.body`` messages, empty ones included.
    :ivar first_byte_after: seconds from the request's start to its first body byte; None if
        no byte was sent.
    """

    method: str
    path: str
    status_code: int
    elapsed: float
    reason: CancellationReason
    response_started: bool = False
    status_sent: int | None = None
    body_bytes: int = 0
    body_messages: int = 0
    first_byte_after: float | None = None


# -- whose ending is it --------------------------------------------------------------------------


def why_cancelled(state: RequestState, exc: OperationCancelled) -> CancellationReason | None:
    """The reason, if ``exc`` is this request's own cancellation: raised by its token (directly,
    or by a token linked to it) because the client left or the deadline passed, or raised for
    ``SHUTDOWN`` by its token or the app's stopping token it was linked with
    (``stop_on_shutdown``). Else None: a token of the app's own, cancelled for its own reasons,
    is the app's error."""
    token = state.issued
    if token is None:
        return None
    origin = exc.token._origin or exc.token
    reason = exc.reason
    if origin is token:
        return reason if reason is _CLIENT or reason is _DEADLINE or reason is _SHUTDOWN else None
    link = state.stopping_link
    # The link's parents: the request's token, and the stopping token, while it can trip.
    if reason is _SHUTDOWN and link is not None and origin in link.token._parents:
        return reason
    return None


def why_ended(state: RequestState, exc: BaseException) -> CancellationReason | None:
    """The reason, if ``exc``, escaping the app, is this request's own ending; else None.

    Besides :func:`why_cancelled`: Starlette's ``ClientDisconnect`` once the client left (its
    ``request.stream()`` ran into the disconnect); on a WebSocket whose token was taken, the
    error of a ``send`` that raced the peer's leaving (the server's ``OSError``, or Starlette's
    ``WebSocketDisconnect`` made of it; a disconnect the app *received* is the app's to handle,
    and goes on as it would without this middleware); an exception group of one such reason;
    and Starlette's ``RuntimeError("Caught handled exception, but response already started.")``
    around one.
    """
    if isinstance(exc, OperationCancelled):
        return why_cancelled(state, exc)
    if isinstance(exc, ClientDisconnect) and state.aborted:
        return _CLIENT
    error = state.send_error
    if (
        error is not None
        and state.issued is not None
        and (exc is error or exc.__context__ is error)
    ):
        return _CLIENT
    if isinstance(exc, BaseExceptionGroup):
        reasons = {why_ended(state, inner) for inner in exc.exceptions}
        return reasons.pop() if len(reasons) == 1 else None
    cause = exc.__cause__
    if isinstance(exc, RuntimeError) and state.response_started and cause is not None:
        return why_ended(state, cause)
    return None


# -- the answer ----------------------------------------------------------------------------------


class WebSocketAnswer(Response):
    """A WebSocket's answer: a close with ``code`` and ``reason``, or nothing (``None``: the
    peer is gone).

    A ``Response``, so that exception handlers can return it as they return any other.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__()
        self.code = code
        self.reason = reason

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.code is not None:
            await send({"type": "websocket.close", "code": self.code, "reason": self.reason})


def answer(state: RequestState, reason: CancellationReason) -> Response:
    """What answers a request that ended for ``reason`` (one of why_ended's), noted on the state.

    The client left: an empty response with the configured status (499), which nobody reads but
    the server's access log shows; nothing on a WebSocket. The deadline passed: a 504 with RFC
    9457 problem details; a WebSocket is closed with code 1011. The server shuts down: a 503
    with problem details and ``Retry-After``; a WebSocket is closed with code 1001.
    """
    state.ended_with = reason
    if state.websocket:
        if reason is _CLIENT:
            return WebSocketAnswer(None)
        if reason is _SHUTDOWN:
            return WebSocketAnswer(GOING_AWAY, "server shutting down")
        return WebSocketAnswer(1011, "deadline")
    if reason is _CLIENT:
        return Response(status_code=state.config.status_code)
    if reason is _SHUTDOWN:
        return shutdown_problem()
    return deadline_problem(state.deadline)


def shutdown_problem() -> Response:
    """The 503 for a request that the server's shutdown ended, with RFC 9457 problem details."""
    detail = "The server is shutting down; retry the request."
    body = {"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": detail}
    return Response(
        json.dumps(body),
        status_code=503,
        headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER)},
        media_type="application/problem+json",
    )


def deadline_problem(deadline: float | None) -> Response:
    """The 504 for a passed deadline, with RFC 9457 problem details."""
    detail = (
        "The request did not complete within its deadline."
        if deadline is None
        else f"The request did not complete within its {deadline:g} s deadline."
    )
    body = {"type": "about:blank", "title": "Gateway Timeout", "status": 504, "detail": detail}
    return Response(json.dumps(body), status_code=504, media_type="application/problem+json")


# -- the log line and the hook -------------------------------------------------------------------


def log_ending(state: RequestState) -> None:
    """Log how the request ended and call the hook, once the app has finished.

    Once per request whose client left, however the app ended (by OperationCancelled, by
    returning, or by Starlette cancelling a streaming body); once per request answered with the
    deadline's 504 or the shutdown's 503 (or a WebSocket closed for either). Nothing for a
    WebSocket whose peer left: that is a WebSocket's normal ending. Called only for those (see
    :func:`needs_logging`).
    """
    if state.aborted:
        if not state.websocket:
            config = state.config
            aborted = _record(state, config.status_code, _CLIENT)
            line = (aborted.method, aborted.path, config.status_code, config.message)
            logger.log(config.level, ABORTED_LOG, *line, aborted.elapsed, extra=_extra(aborted))
            _call_hook(state, aborted)
        return
    if state.ended_with is _SHUTDOWN:
        aborted = _record(state, 503, _SHUTDOWN)
        logger.info(
            SHUTDOWN_LOG, aborted.method, aborted.path, aborted.elapsed, extra=_extra(aborted)
        )
    else:
        aborted = _record(state, 504, _DEADLINE)
        logger.warning(
            DEADLINE_LOG,
            aborted.method,
            aborted.path,
            state.deadline,
            aborted.elapsed,
            extra=_extra(aborted),
        )
    if not state.websocket:
        _call_hook(state, aborted)


def needs_logging(state: RequestState) -> bool:
    """Whether :func:`log_ending` has something to say: the client left, or the deadline's or
    the shutdown's answer was sent."""
    return state.aborted or state.ended_with is _DEADLINE or state.ended_with is _SHUTDOWN


def _record(state: RequestState, status: int, reason: CancellationReason) -> AbortedRequest:
    scope = state.scope
    method: str = "WEBSOCKET" if state.websocket else scope.get("method", "")
    path = printable(scope.get("path", ""))
    elapsed = time.perf_counter() - state.started_at
    if state.ended_with is not None:
        # fastapi-abort answered (only ever before the app's response started): the messages
        # counted are its own 499, 504 or 503, not the app's.
        return AbortedRequest(method, path, status, elapsed, reason)
    first_byte = state.first_byte_at
    return AbortedRequest(
        method,
        path,
        status,
        elapsed,
        reason,
        response_started=state.response_started,
        status_sent=state.status_sent,
        body_bytes=state.body_bytes,
        body_messages=state.body_messages,
        first_byte_after=None if first_byte is None else first_byte - state.started_at,
    )


def _extra(aborted: AbortedRequest) -> dict[str, object]:
    # The log record's attributes, for structured logging (docs/observability.md).
    return {
        "http_method": aborted.method,
        "http_path": aborted.path,
        "status_code": aborted.status_code,
        "elapsed": aborted.elapsed,
        "reason": str(aborted.reason),
        "response_started": aborted.response_started,
        "status_sent": aborted.status_sent,
        "body_bytes": aborted.body_bytes,
        "body_messages": aborted.body_messages,
        "first_byte_after": aborted.first_byte_after,
    }


def _call_hook(state: RequestState, aborted: AbortedRequest) -> None:
    hook = state.config.on_abort
    if hook is not None:
        try:
            hook(aborted)
        except Exception:
            logger.exception(HOOK_FAILED, hook)


def printable(text: str) -> str:
    """``text`` with control characters escaped (a path is percent-decoded: keep control
    characters out of the log line)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
