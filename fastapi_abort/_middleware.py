"""The ASGI middleware that trips a request's token when its client goes away.

How a disconnect is seen: the server returns ``http.disconnect`` from ``receive()``. Servers also
return it after a normal response, so it means "client gone" only while the response is not yet
complete, which only ``send`` can tell. Some servers (hypercorn, daphne) hand each message to
exactly one caller of ``receive()``, so this middleware must be the only one reading the server's
``receive``: the app gets a ``receive`` that delivers each body message exactly once and reports
the disconnect to every caller once it happened.

Somebody has to be waiting in ``receive()`` to hear a disconnect. Most requests never ask for their
token, and they pay no more than two wrapped callables and one small object. The first request for
the token starts a *watcher*: one background task that reads the server's ``receive`` whenever the
app is not reading it itself, holding at most one body message for the app.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable
from contextvars import Context
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import ClientDisconnect
from starlette.websockets import WebSocketDisconnect

from ._backend import Cancellable, DelayBatch, call_after_delay, spawn
from ._token import (
    CancellationReason,
    CancellationToken,
    OperationCancelled,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # anyio depends on it below 3.11

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("fastapi_abort")

#: The scope key under which the middleware keeps the request's state.
SCOPE_KEY = "fastapi_abort.request"
#: The name of the watcher tasks.
WATCHER_NAME = "fastapi_abort request watcher"

#: The quiet line logged once per request whose client went away before the response was
#: complete, when the app has finished (method, path, status code, message, elapsed seconds).
ABORTED_LOG = "%s %s: %d %s after %.3f s"
#: Logged at WARNING once per request that its deadline ended with a 504 (method, path,
#: deadline, elapsed seconds).
DEADLINE_LOG = "%s %s: 504 Gateway Timeout: its %.3f s deadline passed, after %.3f s"
BODY_BEFORE_START = (
    "The app sent 'http.response.body' before 'http.response.start'. Send the start "
    "(status and headers) first."
)
HOOK_FAILED = "The on_abort hook %r raised; the request was not affected"
WATCHER_FAILED = "The request watcher stopped: the server's receive() raised"
BAD_STATUS = "status_code must be an int from 100 to 999 (499 by default), got {value!r}"
BAD_LEVEL = (
    "log_level must be a logging level: an int such as logging.INFO or a name such as 'INFO', "
    "got {value!r}"
)
BAD_MESSAGE = "message must be a str such as 'Client Closed Request', got {value!r}"
BAD_DELAY = "watcher_delay must be a number of seconds >= 0 (0.001 by default), got {value!r}"
BAD_DEADLINE = (
    "deadline must be a number of seconds > 0, or None for no deadline (the default), got {value!r}"
)
BAD_HOOK = "on_abort must be a callable taking one AbortedRequest, or None, got {value!r}"


@dataclass(frozen=True)
class AbortedRequest:
    """What the ``on_abort`` hook receives, once per request that its token ended.

    :ivar method: the HTTP method.
    :ivar path: the path, without the query string (which may hold secrets), with control
        characters escaped.
    :ivar status_code: the status the request ended with: 499 (or the configured status) when
        the client left, 504 when the deadline passed.
    :ivar elapsed: seconds from the request's start to the end of the app's work: the seconds of
        work the request was cut short at.
    :ivar reason: :attr:`CancellationReason.CLIENT_DISCONNECTED` or
        :attr:`CancellationReason.DEADLINE`.
    """

    __slots__ = ("elapsed", "method", "path", "reason", "status_code")

    method: str
    path: str
    status_code: int
    elapsed: float
    reason: CancellationReason


def check_deadline(deadline: float | None) -> float | None:
    """Validate a deadline in seconds (``None``: no deadline)."""
    if deadline is None:
        return None
    if (
        isinstance(deadline, bool)
        or not isinstance(deadline, int | float)
        or not 0 < deadline < math.inf
    ):
        raise ValueError(BAD_DEADLINE.format(value=deadline))
    return float(deadline)


@dataclass(frozen=True)
class Config:
    """What the middleware and the exception handler do for a request whose client left."""

    status_code: int = 499
    log_level: int = logging.INFO
    message: str = "Client Closed Request"
    watcher_delay: float = 0.001
    deadline: float | None = None
    on_abort: Callable[[AbortedRequest], object] | None = None

    @classmethod
    def of(
        cls,
        status_code: int,
        log_level: int | str,
        message: str,
        watcher_delay: float = 0.001,
        deadline: float | None = None,
        on_abort: Callable[[AbortedRequest], object] | None = None,
    ) -> Config:
        if isinstance(status_code, bool) or not isinstance(status_code, int):
            raise TypeError(BAD_STATUS.format(value=status_code))
        if not 100 <= status_code <= 999:
            raise ValueError(BAD_STATUS.format(value=status_code))
        level = logging.getLevelName(log_level) if isinstance(log_level, str) else log_level
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValueError(BAD_LEVEL.format(value=log_level))
        if not isinstance(message, str):
            raise TypeError(BAD_MESSAGE.format(value=message))
        if (
            isinstance(watcher_delay, bool)
            or not isinstance(watcher_delay, int | float)
            or not 0 <= watcher_delay < float("inf")
        ):
            raise ValueError(BAD_DELAY.format(value=watcher_delay))
        if on_abort is not None and not callable(on_abort):
            raise TypeError(BAD_HOOK.format(value=on_abort))
        return cls(
            status_code, level, message, float(watcher_delay), check_deadline(deadline), on_abort
        )


class RequestAbortedMiddleware:
    """Pure ASGI middleware that cancels a request's token when the client disconnects.

    Add it outermost (``fastapi_abort.install(app)`` does), so that no other middleware reads the
    server's ``receive`` or hides ``send`` from it. ``http`` and ``websocket`` scopes are
    handled; ``lifespan`` scopes pass through untouched, and so does a request already handled by
    an outer instance of this middleware. An app that sends a body before the response start
    gets a ``RuntimeError`` that says so.

    :param status_code: the status of the quiet response and log line (499 by default).
    :param log_level: the level of that line (``logging.INFO`` by default), an int or a name.
    :param message: the words after the status code (``"Client Closed Request"``).
    :param watcher_delay: seconds between a request first asking for its token and the watcher
        starting to listen for a disconnect (1 ms by default, asyncio only). A request that ends
        sooner never pays for a watcher; a disconnect in that time is noticed when it starts.
    :param deadline: seconds from the start of each request after which its token is cancelled
        with reason :attr:`CancellationReason.DEADLINE` (``None``, the default: no deadline). A
        request whose app then lets the resulting :class:`OperationCancelled` escape before its
        response started gets a 504 ``application/problem+json`` response, logged once at
        WARNING. Routes can change it with the :func:`deadline` dependency.
    :param on_abort: called once per request that its token ended (the client left, or the
        deadline passed), after the app has finished, with an :class:`AbortedRequest`. It runs
        on the event loop: keep it quick (count, record). What it raises is logged and ignored.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        status_code: int = 499,
        log_level: int | str = logging.INFO,
        message: str = "Client Closed Request",
        watcher_delay: float = 0.001,
        deadline: float | None = None,
        on_abort: Callable[[AbortedRequest], object] | None = None,
    ) -> None:
        self.app = app
        self.config = Config.of(status_code, log_level, message, watcher_delay, deadline, on_abort)
        #: Starlette's ServerErrorMiddleware, when this middleware took its place (fused()).
        self._errors: ServerErrorMiddleware | None = None

    @classmethod
    def fused(cls, errors: ServerErrorMiddleware, **options: Any) -> RequestAbortedMiddleware:
        """This middleware in place of Starlette's ``ServerErrorMiddleware``, doing its work too.

        ``install()`` uses it: Starlette puts ``ServerErrorMiddleware`` outermost in every app,
        and it wraps every request and every ``send`` in a coroutine of its own only to know
        whether the response started, which this middleware knows already. Fused, a request
        passes one layer instead of two. ``errors`` itself still does the work when an
        exception escapes the app: it is run, as it is, around that exception (see
        ``_server_error()``), so its handler, its debug page and its response are Starlette's
        own, whatever its version.
        """
        middleware = cls(errors.app, **options)
        middleware._errors = errors
        return middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every request of the app passes here, so this is written for the fewest calls and
        # attribute stores (each one costs every request; see docs/benchmarks.md).
        kind = scope["type"]
        if kind == "http":
            state = RequestState()
        elif kind == "websocket":
            state = WebSocketState()
        else:
            await (self._errors or self.app)(scope, receive, send)  # lifespan
            return
        if SCOPE_KEY in scope:
            # An outer instance of this middleware handles the request already.
            await (self._errors or self.app)(scope, receive, send)
            return
        # What RequestState.__init__ would do (the fields that a request may not need are class
        # attributes, written only when they change): a Python __init__, entered from C
        # through type.__call__, costs about as much as all of these stores together.
        state.config = self.config
        # The scope holds the state too: the cycle is broken when the request ends (below).
        state.scope = scope
        state._server_receive = receive
        state._server_send = send
        state.started_at = time.perf_counter()
        state.issued = state._watcher = None
        state.response_started = state.response_complete = state._trailers = False
        state.aborted = state.finished = False
        scope[SCOPE_KEY] = state
        try:
            await self.app(scope, state.receive, state.send)
        except Exception as exc:
            ended_by = state.ended_by(exc)
            if ended_by is CancellationReason.CLIENT_DISCONNECTED:
                # The client left and the app let the resulting OperationCancelled escape (from
                # a streaming body, or with no exception handler installed): the quiet ending.
                if not state.response_started:
                    await state.send_abort_response()
            elif ended_by is CancellationReason.DEADLINE and not state.response_started:
                await state.send_deadline_response()
            else:
                # Not this request's own ending (or a deadline after the response started, which
                # cannot become a 504: the response is cut short, and the server must see an
                # error so that the client does too). Fused, Starlette's error middleware answers
                # it now, as it did from inside this middleware before.
                errors = self._errors
                if errors is not None and kind == "http":
                    await _server_error(errors, state, exc)  # raises exc
                raise
        except BaseException as exc:
            # The server cancelled the request (at shutdown, once its graceful timeout ran out):
            # work bound to the token (callbacks, linked tokens) stops too. Always re-raised.
            if state.issued is not None and isinstance(exc, anyio.get_cancelled_exc_class()):
                state.issued._cancel(CancellationReason.SHUTDOWN, None)
            raise
        finally:
            if state.issued is None:
                state.finished = True  # finish(), with no watcher to stop, no token to close
            else:
                state.finish()
            # The state holds the server's receive, which holds the server's request object,
            # which holds the scope: without this, every request would be left to the cyclic
            # garbage collector (measured on uvicorn: 0.80x the throughput of plain FastAPI).
            scope.pop(SCOPE_KEY, None)
        if state.aborted:
            # Once per request whose client left, however the app ended: by OperationCancelled,
            # by returning, or by Starlette cancelling a streaming body.
            state.log_abort()
        elif state.issued is not None and state.deadline_response:
            # (A deadline needs the token: it is the token's deadline.)
            state.log_deadline()


async def _server_error(errors: ServerErrorMiddleware, state: RequestState, exc: Exception) -> None:
    """What ``errors`` does with an exception that escaped the app: its 500 response (unless
    the response started), its handler or debug page; then ``exc`` is raised again, for the
    server to log."""
    errors = copy.copy(errors)
    errors.app = _Raise(exc)
    # It tracks the response's start through its own send wrapper, which the app never called:
    # a response already started must not get a second start.
    send: Send = _ignore if state.response_started else state.send
    await errors(state.scope, state.receive, send)


class _Raise:
    """An ASGI app that raises the exception it was made with."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise self.exc


async def _ignore(message: Message) -> None:
    pass


class _Inherit(enum.Enum):
    APP = enum.auto()  # the request has no deadline of its own: the app's applies


class RequestState:
    """Everything the middleware knows about one request. Lives in ``scope[SCOPE_KEY]``."""

    #: The message by which the server says that the connection is gone.
    DISCONNECT = "http.disconnect"

    # The fields every request sets (in RequestAbortedMiddleware.__call__), then a __dict__ for
    # the ones below, which most requests never change: a request pays for a field only once
    # it writes it.
    __slots__ = (
        "__dict__",
        "_server_receive",
        "_server_send",
        "_trailers",
        "_watcher",
        "aborted",
        "config",
        "finished",
        "issued",
        "response_complete",
        "response_started",
        "scope",
        "started_at",
    )

    config: Config
    #: The request's scope (which holds this state under SCOPE_KEY until the request ends).
    scope: Scope
    _server_receive: Receive
    _server_send: Send
    #: time.perf_counter() at the request's start.
    started_at: float
    #: The request's token, once somebody asked for it. The middleware cancels and closes it
    #: itself: a CancellationTokenSource would be one more object per request.
    issued: CancellationToken | None
    #: None (no watcher), the batch it waits in for its delay to pass, or the task.
    _watcher: DelayBatch | Cancellable | None
    response_started: bool
    response_complete: bool
    #: The start message asked for trailers (the response is complete after them).
    _trailers: bool
    #: The server returned ``http.disconnect`` before the response was complete: the client left.
    aborted: bool
    #: The app has returned: the token is final from now on.
    finished: bool

    #: A deadline of the request's own (set_deadline()), replacing the app's.
    _own_deadline: float | _Inherit | None = _Inherit.APP
    #: The request ended with a 504 for its deadline (sent here or by the exception handler).
    deadline_response: bool = False
    # Reading the server's receive: one reader at a time, the app or the watcher.
    _reading: bool = False
    _app_has_read: bool = False
    _hold_for_continue: bool = False
    #: The message the watcher holds for the app.
    _pending: Message | None = None
    #: The server's disconnect message, given to every later call of the app's receive.
    _gone: Message | None = None
    _changed: anyio.Event | None = None

    @property
    def deadline(self) -> float | None:
        """Seconds from ``started_at`` to the request's deadline, or None."""
        own = self._own_deadline
        return self.config.deadline if own is _Inherit.APP else own

    @property
    def disconnected(self) -> bool:
        """The server returned ``http.disconnect`` (before or after the response completed)."""
        return self._gone is not None

    @property
    def method(self) -> str:
        method: str = self.scope.get("method", "")
        return method

    @property
    def path(self) -> str:
        path: str = self.scope.get("path", "")
        return path

    # -- the token -----------------------------------------------------------------------------

    def token(self) -> CancellationToken:
        """The request's token, created on first use. Call on the event loop thread only."""
        token = self.issued
        if token is None:
            token = self.issued = CancellationToken()
            if self.aborted:
                token._cancel(CancellationReason.CLIENT_DISCONNECTED, None)
            elif self.response_complete or self.finished:
                token._close()
            else:
                if self.deadline is not None:
                    token._cancel_after(self._remaining())
                delay = self.config.watcher_delay
                batch = call_after_delay(self, delay) if delay > 0 else None
                self._watcher = batch if batch is not None else spawn(self._watch, WATCHER_NAME)
        return token

    def _remaining(self) -> float:
        deadline = self.deadline
        if deadline is None:
            return math.inf
        return max(0.0, self.started_at + deadline - time.perf_counter())

    def set_deadline(self, seconds: float | None) -> None:
        """Replace the request's deadline: ``seconds`` from the request's start, or none.

        Call on the event loop thread. Takes effect at once if the token exists already.
        """
        deadline = check_deadline(seconds)
        token = self.issued
        if token is not None and token.is_cancellation_requested:
            return  # too late to change: keep the deadline that the token went by
        self._own_deadline = deadline
        if token is not None:
            token._cancel_after(self._remaining())

    def cancelled_by(self, exc: OperationCancelled) -> CancellationReason | None:
        """The reason (client left, or deadline) if ``exc`` comes from this request's token,
        directly or through a link; else None."""
        token = self.issued
        reason = exc.reason
        if (
            token is None
            or (exc.token._origin or exc.token) is not token
            or (
                reason is not CancellationReason.CLIENT_DISCONNECTED
                and reason is not CancellationReason.DEADLINE
            )
        ):
            return None
        return reason

    def ended_by(self, exc: BaseException) -> CancellationReason | None:
        """Why the app ended with ``exc``, if it is this request's own cancellation."""
        if isinstance(exc, OperationCancelled):
            return self.cancelled_by(exc)
        if isinstance(exc, ClientDisconnect) and self.aborted:
            # Starlette's request.stream() (or body(), form()) ran into the disconnect.
            return CancellationReason.CLIENT_DISCONNECTED
        if isinstance(exc, BaseExceptionGroup):
            reasons = {self.ended_by(inner) for inner in exc.exceptions}
            return reasons.pop() if len(reasons) == 1 else None
        # Starlette's exception-handler wrapper turns a handled exception raised after the
        # response started into RuntimeError("Caught handled exception, but response already
        # started.") from the original.
        cause = exc.__cause__
        if isinstance(exc, RuntimeError) and self.response_started and cause is not None:
            return self.ended_by(cause)
        return None

    def log_abort(self) -> None:
        """Log the quiet line, and call the hook."""
        config = self.config
        elapsed = time.perf_counter() - self.started_at
        method = self.method
        path = _printable(self.path)
        reason = CancellationReason.CLIENT_DISCONNECTED
        logger.log(
            config.log_level,
            ABORTED_LOG,
            method,
            path,
            config.status_code,
            config.message,
            elapsed,
            extra={
                "http_method": method,
                "http_path": path,
                "status_code": config.status_code,
                "elapsed": elapsed,
                "reason": str(reason),
            },
        )
        self._call_hook(method, path, config.status_code, elapsed, reason)

    def log_deadline(self) -> None:
        """Log the 504 line, and call the hook."""
        elapsed = time.perf_counter() - self.started_at
        method = self.method
        path = _printable(self.path)
        reason = CancellationReason.DEADLINE
        logger.warning(
            DEADLINE_LOG,
            method,
            path,
            self.deadline,
            elapsed,
            extra={
                "http_method": method,
                "http_path": path,
                "status_code": 504,
                "elapsed": elapsed,
                "reason": str(reason),
            },
        )
        self._call_hook(method, path, 504, elapsed, reason)

    def _call_hook(
        self, method: str, path: str, status: int, elapsed: float, reason: CancellationReason
    ) -> None:
        hook = self.config.on_abort
        if hook is None:
            return
        try:
            hook(AbortedRequest(method, path, status, elapsed, reason))
        except Exception:
            logger.exception(HOOK_FAILED, hook)

    async def send_deadline_response(self) -> None:
        self.deadline_response = True
        body, headers = deadline_problem(self.deadline)
        await self.send({"type": "http.response.start", "status": 504, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def send_abort_response(self) -> None:
        # Nobody reads it, but the server's access log then shows the status.
        status = self.config.status_code
        try:
            await self.send({"type": "http.response.start", "status": status, "headers": []})
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # pragma: no cover - ASGI 2.4 servers may raise on a closed connection
            pass

    # -- receive -------------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The ``receive`` the app gets: each body message once, the disconnect to everyone."""
        if not self._app_has_read:
            self._app_has_read = True
            if self._hold_for_continue:
                self._notify()
        while True:
            pending = self._pending
            if pending is not None:
                self._pending = None
                self._notify()
                return pending
            gone = self._gone
            if gone is not None:
                return dict(gone)
            if not self._reading:
                return await self._read()
            await self._wait_changed()

    async def _read(self) -> Message:
        self._reading = True
        try:
            message = await self._server_receive()
        finally:
            self._reading = False
            self._notify()
        if message["type"] == self.DISCONNECT:
            self._disconnected(message)
        return message

    def _disconnected(self, message: Message) -> None:
        self._gone = message
        if not self.response_complete and not self.aborted:
            self.aborted = True
            if self.issued is not None:
                self.issued._cancel(CancellationReason.CLIENT_DISCONNECTED, None)

    def _notify(self) -> None:
        event = self._changed
        if event is not None:
            self._changed = None
            event.set()

    async def _wait_changed(self) -> None:
        event = self._changed
        if event is None:
            event = self._changed = anyio.Event()
        await event.wait()

    # -- the watcher ---------------------------------------------------------------------------

    def delay_passed(self, context: Context) -> None:
        """Start the watcher: its delay has passed and the request still runs (asyncio only).

        It runs in (a copy of) the context of the call that asked for the token, as a task
        started then would: what the context holds may matter to the server's ``receive``.
        """
        self._watcher = context.run(spawn, self._watch, WATCHER_NAME)

    def _must_wait(self) -> bool:
        if self._reading:
            return True
        pending = self._pending
        if (
            pending is not None
            and (pending.get("more_body", False) or pending["type"] != "http.request")
            and not self.response_started
        ):
            # Holding one message is the bound: read on only once the app takes it. Only the
            # last body message lets the watcher read on, for the disconnect that may follow;
            # after a message of a type it does not know, more body may come.
            return True
        return self._hold_for_continue and not (self._app_has_read or self.response_started)

    async def _watch(self) -> None:
        if not self._app_has_read and not self.response_started:
            # Reading before the app does would make the server answer "100 Continue" on the
            # app's behalf: wait until the app reads or responds.
            self._hold_for_continue = any(
                name == b"expect" and value.lower() == b"100-continue"
                for name, value in self.scope.get("headers", ())
            )
        try:
            while self._gone is None and not self.response_complete:
                if self._must_wait():
                    await self._wait_changed()
                    continue
                # _read(), inlined: one coroutine frame less for every request being watched.
                self._reading = True
                try:
                    message = await self._server_receive()
                finally:
                    self._reading = False
                    self._notify()
                if message["type"] == self.DISCONNECT:
                    self._disconnected(message)
                elif self._pending is None:
                    self._pending = message
                # else: the response has started and the app did not take the last message:
                # this one is discarded, as Starlette's StreamingResponse discards body it reads.
        except Exception:
            logger.debug(WATCHER_FAILED, exc_info=True)

    # -- send ----------------------------------------------------------------------------------

    def send(self, message: Message) -> Awaitable[None]:
        """The ``send`` the app gets: watches for the end of the response.

        A plain function that returns the server's awaitable: the app awaits the server's
        ``send`` directly, with no coroutine of ours in between (one coroutine object and frame
        less per message).
        """
        # Every request passes here twice or more: the common cases come first, and call no
        # other method unless they must (a call costs about as much as the rest of this).
        kind = message["type"]
        if kind == "http.response.body":
            if not self.response_started:
                raise RuntimeError(BODY_BEFORE_START)
            # `in` before the lookup: Starlette leaves more_body out of a last (or only) body.
            if not (message.get("more_body")) and not self._trailers:
                # _complete(), inlined
                self.response_complete = True
                if self.issued is not None:
                    self._completed()
        elif kind == "http.response.start":
            self.response_started = True
            if message.get("trailers"):
                self._trailers = True
            if self.issued is not None:
                # A watcher may be waiting for the response to start (see _must_wait()).
                self._notify()
        elif kind == "http.response.trailers":
            if not message.get("more_trailers", False):
                self._complete()
        elif kind == "http.response.pathsend" or (
            kind == "http.response.zerocopysend"
            and not message.get("more_body", False)
            and not self._trailers
        ):
            self._complete()
        return self._server_send(message)

    def _complete(self) -> None:
        # Marked before the server's send: some servers report http.disconnect for a finished
        # response before that send returns, and that must never read as "client gone".
        self.response_complete = True
        if self.issued is not None:
            self._completed()

    def _completed(self) -> None:
        # The response is complete, and the token exists (a watcher exists only with a token).
        watcher = self._watcher
        if watcher is not None:
            self._stop_watcher(watcher)
        if not self.aborted:
            self.issued._close()  # type: ignore[union-attr]

    def _stop_watcher(self, watcher: Cancellable | DelayBatch) -> None:
        self._watcher = None
        if isinstance(watcher, DelayBatch):
            watcher.pending.pop(self, None)
        else:
            watcher.cancel()

    def finish(self) -> None:
        """The app returned: the token is final from now on."""
        self.finished = True
        watcher = self._watcher
        if watcher is not None:
            self._stop_watcher(watcher)
        token = self.issued
        # Closed already if the response completed before the client left (_completed()).
        if token is not None and (self.aborted or not self.response_complete):
            token._close()


def deadline_problem(deadline: float | None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The RFC 9457 problem details of a 504 for a passed deadline: body and headers."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Gateway Timeout",
            "status": 504,
            "detail": "The request did not complete within its deadline."
            if deadline is None
            else f"The request did not complete within its {deadline:g} s deadline.",
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return body, headers


def _printable(text: str) -> str:
    # A path is percent-decoded: keep control characters out of the log line.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class WebSocketState(RequestState):
    """What the middleware knows about one WebSocket connection.

    The token trips when the peer disconnects before the app closed the connection (or sent a
    denial response). The watcher holds at most one incoming message for the app, and reads
    on only once the app took it: while the app does not read, a disconnect behind a held
    message is seen once it does (or when the server makes ``send`` fail). No app-wide
    deadline and no log line: a peer that leaves a WebSocket is its normal ending.
    """

    __slots__ = ()

    DISCONNECT = "websocket.disconnect"

    @property
    def deadline(self) -> float | None:
        """A connection's deadline is its own (the deadline dependency): none by default."""
        own = self._own_deadline
        return None if own is _Inherit.APP else own

    def _must_wait(self) -> bool:
        return self._reading or self._pending is not None

    def ended_by(self, exc: BaseException) -> CancellationReason | None:
        if self.aborted and isinstance(exc, OSError | WebSocketDisconnect):
            # A send that raced the peer's leaving: the server's OSError, or Starlette's
            # WebSocketDisconnect made of it. The same quiet ending as OperationCancelled.
            return CancellationReason.CLIENT_DISCONNECTED
        return super().ended_by(exc)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.close" or (
            kind == "websocket.http.response.body" and not message.get("more_body", False)
        ):
            self._complete()
        elif kind == "websocket.accept" or kind == "websocket.http.response.start":
            self.response_started = True
        try:
            await self._server_send(message)
        except OSError:
            # Servers of ASGI spec 2.4 raise from send() once the peer is gone (uvicorn:
            # ClientDisconnected): the same news as websocket.disconnect.
            if not self.disconnected:
                self._disconnected({"type": self.DISCONNECT, "code": 1006})
            raise

    async def send_abort_response(self) -> None:
        pass  # the connection is gone: nothing to answer

    async def send_deadline_response(self) -> None:
        self.deadline_response = True
        await self.send({"type": "websocket.close", "code": 1011, "reason": "deadline"})

    def log_abort(self) -> None:
        pass  # see the class docstring

    def log_deadline(self) -> None:
        logger.warning(
            DEADLINE_LOG,
            "WEBSOCKET",
            _printable(self.path),
            self.deadline,
            time.perf_counter() - self.started_at,
        )
