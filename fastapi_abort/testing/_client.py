"""Test an app's endpoints with a client that leaves: ``fastapi_abort.testing``.

httpx's ``ASGITransport`` and Starlette's ``TestClient`` never tell a running app that its
client went away. :class:`AbortingClient` is a small in-process ASGI server that can: it calls the
app as uvicorn does, makes the client leave at a chosen moment (a :class:`Leave` trigger), and
reports what happened in a :class:`RequestOutcome`: what the app sent, whether the request's
token tripped, the quiet 499 log record::

    async with AbortingClient(app) as client:
        outcome = await client.get("/slow", leave=leave_after(0.05))
    assert outcome.token_tripped
    assert outcome.status == 499

It runs on asyncio and trio (anyio), needs no pytest, and is not imported by ``fastapi_abort``.
The app must have :func:`fastapi_abort.install` (or ``RequestAbortedMiddleware``) applied.
"""

from __future__ import annotations

import json as jsonlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlencode

import anyio
import anyio.lowlevel
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message

from .._endings import ABORTED_LOG
from .._middleware import RequestAbortedMiddleware
from .._state import SCOPE_KEY, RequestState
from .._token import CancellationReason, CancellationToken

__all__ = (
    "AbortingClient",
    "Leave",
    "RequestOutcome",
    "leave_after",
    "leave_after_chunks",
    "leave_mid_upload",
    "leave_on_response_start",
    "leave_when",
)

MIDDLEWARE_MISSING = (
    "{request}: the app called receive() or send() without RequestAbortedMiddleware around it, "
    "so nothing would notice the client leave. Call fastapi_abort.install(app) right after "
    "creating the app (or add RequestAbortedMiddleware), and give AbortingClient the outermost "
    "app."
)
TIMED_OUT = (
    "{request} did not finish within {timeout:g} s, so the app was cancelled. When the time was "
    "up: {response}; {reading}; {client}."
)
NO_RESPONSE = "no response had started"
RESPONSE_STARTED = "the response had started (status {status}, {chunks} body messages sent)"
RESPONSE_COMPLETE = "the response was complete but the app had not returned (a background task?)"
READING = "a receive() call was waiting (the app's, or the middleware's watcher's)"
NOT_READING = "nothing was waiting in receive()"
CLIENT_LEFT = "the client had left {seconds:.3f} s after the request started"
CLIENT_THERE = "the client had not left (leave={leave!r})"
LIFESPAN_TIMED_OUT = (
    "The app's lifespan {phase} did not finish within {timeout:g} s. Pass lifespan=False to "
    "AbortingClient if the app does not run a lifespan."
)
NOT_LIFESPAN = "Expected an ASGI lifespan message, but got '{type}'."
# What a lifespan may send (uvicorn's lifespan/on.py asserts the same).
_LIFESPAN_MESSAGES = frozenset(
    {
        "lifespan.startup.complete",
        "lifespan.startup.failed",
        "lifespan.shutdown.complete",
        "lifespan.shutdown.failed",
    }
)
LIFESPAN_FAILED = "The app's lifespan {phase} failed: {message}"
NOT_OPEN = (
    "The client is not open: use it as `async with AbortingClient(app) as client:` and send "
    "requests inside that block."
)
LEAVE_REUSED = "{leave!r} was given to a request already; a Leave serves one request only."
CONTENT_AND_JSON = "Pass content= or json=, not both."
BAD_TIMEOUT = "timeout must be a number of seconds > 0, got {value!r}"
BAD_SECONDS = "seconds must be a number >= 0, got {value!r}"
BAD_CHUNKS = (
    "chunks must be an int >= 1 (use leave_on_response_start() to leave before the first), "
    "got {value!r}"
)
BAD_BYTES = "after_bytes must be an int >= 0, got {value!r}"
# The texts uvicorn raises with for the same mistakes (protocols/http/h11_impl.py).
EXPECTED_START = "Expected ASGI message 'http.response.start', but got '{type}'."
EXPECTED_BODY = "Expected ASGI message 'http.response.body', but got '{type}'."
AFTER_COMPLETE = "Unexpected ASGI message '{type}' sent, after response already completed."

DEFAULT_TIMEOUT = 10.0

Content = bytes | Iterable[bytes] | AsyncIterable[bytes]
HeaderInput = Mapping[str, str] | Sequence[tuple[str, str]]

_logger = logging.getLogger("fastapi_abort")


# -- triggers ----------------------------------------------------------------------------------


class Leave:
    """When the client leaves. This base class leaves only when told to: :meth:`now`.

    ::

        leave = Leave()
        async with anyio.create_task_group() as tg:
            tg.start_soon(leave_when_the_query_runs, leave)  # calls leave.now()
            outcome = await client.get("/report", leave=leave)

    A ``Leave`` serves one request. Once the client has left, every ``receive()`` of the app
    returns ``http.disconnect``, and what the app still sends is recorded but reaches nobody.
    The other triggers (:func:`leave_when`, :func:`leave_on_response_start`,
    :func:`leave_after_chunks`, :func:`leave_mid_upload`, :func:`leave_after`) also accept
    :meth:`now`.
    """

    def __init__(self) -> None:
        self._exchange: _Exchange | None = None
        self._used = False
        self._over = False
        self._left = False
        # What the factories below set: the moment the client leaves by itself.
        self._name = "Leave()"
        self._seconds: float | None = None
        self._event: anyio.Event | None = None
        self._on_start = False
        self._chunks: int | None = None
        self._after_bytes: int | None = None

    def now(self) -> None:
        """Make the client leave now.

        Idempotent. Called before the request starts, the client is gone from the start (the
        app's first ``receive()`` returns ``http.disconnect``); once the request is over, does
        nothing. Call on the event loop thread (from a test task), not from a worker thread.
        """
        if self._left or self._over:
            return
        self._left = True
        if self._exchange is not None:
            self._exchange.client_leaves()

    @property
    def left(self) -> bool:
        """Whether the client has left (while the request ran, or before it started)."""
        return self._left

    def __repr__(self) -> str:
        return self._name

    # What the request this trigger serves calls.

    def _bind(self, exchange: _Exchange) -> None:
        if self._used:
            raise RuntimeError(LEAVE_REUSED.format(leave=self))
        self._used = True
        self._exchange = exchange
        if self._event is not None and self._event.is_set():
            self._left = True
        if self._left:
            exchange.client_leaves()

    def _unbind(self) -> None:
        self._exchange = None
        self._over = True

    async def _run(self) -> None:
        """Runs beside the app while the request lasts (cancelled when the app returns)."""
        if self._seconds is not None:
            await anyio.sleep(self._seconds)
            self.now()
        elif self._event is not None:
            await self._event.wait()
            self.now()

    def _sent(self, message: Message, body_messages: int) -> None:
        """The app has sent ``message``, the ``body_messages``-th body message so far."""
        kind = message["type"]
        if (self._on_start and kind == "http.response.start") or (
            self._chunks is not None
            and kind == "http.response.body"
            and body_messages >= self._chunks
        ):
            self.now()


def leave_after(seconds: float) -> Leave:
    """The client leaves ``seconds`` after the request starts (0 included).

    The only trigger based on time: prefer the others, which fire on what the app does, when a
    test must not depend on how fast the machine is. If the app returns sooner, the client
    never leaves (:attr:`RequestOutcome.client_left` is False).

    :raises ValueError: if ``seconds`` is negative or not a finite number.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(BAD_SECONDS.format(value=seconds))
    if not 0 <= seconds < math.inf:
        raise ValueError(BAD_SECONDS.format(value=seconds))
    leave = Leave()
    leave._name, leave._seconds = f"leave_after({seconds!r})", seconds
    return leave


def leave_when(event: anyio.Event) -> Leave:
    """The client leaves when ``event`` is set: by the endpoint at the point to test, say.

    ::

        reached = anyio.Event()

        @app.get("/report")
        async def report(ct: RequestAborted) -> str:
            reached.set()  # the query starts: the client leaves now
            return await run_query(ct)

        outcome = await client.get("/report", leave=leave_when(reached))

    An event set before the request starts makes the client leave at once. Set the event on the
    event loop thread (``anyio.from_thread.run_sync(event.set)`` from a ``def`` endpoint).
    """
    leave = Leave()
    leave._name, leave._event = "leave_when(event)", event
    return leave


def leave_on_response_start() -> Leave:
    """The client leaves as soon as the app sends ``http.response.start``: it got the status
    and headers, then went away. An app that never starts a response is never left."""
    leave = Leave()
    leave._name, leave._on_start = "leave_on_response_start()", True
    return leave


def leave_after_chunks(chunks: int) -> Leave:
    """The client leaves once the app has sent ``chunks`` ``http.response.body`` messages.

    Every body message counts, empty ones included (a ``StreamingResponse`` ends with an empty
    one). If the ``chunks``-th message is the last of the response, the client leaves after a
    complete response, which is no abort at all; if the response has fewer, it never leaves.

    :raises ValueError: if ``chunks`` is not an int >= 1.
    """
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(BAD_CHUNKS.format(value=chunks))
    leave = Leave()
    leave._name, leave._chunks = f"leave_after_chunks({chunks!r})", chunks
    return leave


def leave_mid_upload(after_bytes: int) -> Leave:
    """The client leaves once ``after_bytes`` bytes of the request body have been read.

    The body message that reaches ``after_bytes`` is cut there (and says ``more_body``); the
    next ``receive()`` returns ``http.disconnect``. With 0, the client leaves at the first
    ``receive()``. With a body shorter than ``after_bytes``, it leaves right after the last
    message of the body was read. The trigger is driven by reads: if nobody reads the body
    (neither the app nor the middleware's watcher), the client never leaves.

    :raises ValueError: if ``after_bytes`` is not an int >= 0.
    """
    if isinstance(after_bytes, bool) or not isinstance(after_bytes, int) or after_bytes < 0:
        raise ValueError(BAD_BYTES.format(value=after_bytes))
    leave = Leave()
    leave._name, leave._after_bytes = f"leave_mid_upload(after_bytes={after_bytes!r})", after_bytes
    return leave


# -- the outcome -------------------------------------------------------------------------------


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


# -- capturing the quiet line ------------------------------------------------------------------

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


# -- one request -------------------------------------------------------------------------------


class _Body:
    """The request body, pulled as the app reads it: ``(chunk, more_body)`` per message."""

    def __init__(self, content: Content) -> None:
        self._whole: bytes | None = None
        self._sync: Iterator[bytes] | None = None
        self._async: AsyncIterator[bytes] | None = None
        if isinstance(content, bytes):
            self._whole = content
        elif isinstance(content, AsyncIterable):
            self._async = aiter(content)
        else:
            self._sync = iter(content)

    async def next(self) -> tuple[bytes, bool]:
        if self._whole is not None:
            return self._whole, False
        while True:
            if self._async is not None:
                chunk = await anext(self._async, None)
            else:
                assert self._sync is not None
                chunk = next(self._sync, None)
            if chunk is None:
                return b"", False
            if chunk:  # a server never delivers an empty chunk of a body still coming
                return bytes(chunk), True

    async def aclose(self) -> None:
        source = self._async
        self._async = self._sync = None
        close = getattr(source, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()


class _Exchange:
    """The server side of one request: the app's ``receive`` and ``send``."""

    def __init__(
        self, request: str, scope: dict[str, Any], body: _Body, leave: Leave | None
    ) -> None:
        self.request = request
        self.scope = scope
        self.given = leave
        self.leave = Leave() if leave is None else leave
        self.started_at = time.perf_counter()
        self.state: RequestState | None = None
        self.app: ASGIApp | None = None
        self.middleware_missing = False
        self.app_scope = anyio.CancelScope()
        self.messages: list[Message] = []
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.response_complete = False
        self.left_after: float | None = None
        self.left_before_completion = False
        self.finished = False
        self.aborted_log: logging.LogRecord | None = None
        self.exception: Exception | None = None
        self.timeout_message: str | None = None
        self.body_read = 0
        self.receiving = 0
        self._source = body
        self._body_done = False
        # The next message of the body, pulled from the client (see upload()).
        self._pulled: tuple[bytes, bool] | None = None
        self._wanted = anyio.Event()
        self._uploading = anyio.CancelScope()
        self._changed = anyio.Event()

    # -- the client ----------------------------------------------------------------------------

    def client_leaves(self) -> None:
        # Called once at most, while the app runs: Leave.now() calls it only the first time,
        # and never once run() has unbound the Leave.
        self.left_after = time.perf_counter() - self.started_at
        self.left_before_completion = not self.response_complete
        self._uploading.cancel()  # the rest of the body is not coming
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- the app -------------------------------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        reset = _current.set(self)
        self.app = app
        try:
            with self.app_scope:
                await app(self.scope, self.receive, self.send)
        except Exception as exc:
            self.exception = exc
        finally:
            self.finished = True
            # A Leave fired from now on (in the moment the other tasks are being cancelled)
            # comes after the app's return: it does nothing, as the docs of Leave.now() say.
            self.leave._unbind()
            _current.reset(reset)

    async def watchdog(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        # Said now, before the cancellation changes what the app is doing.
        self.timeout_message = self.timed_out(seconds)
        self.app_scope.cancel()

    async def close_body(self) -> None:
        # An upload the app stopped reading: finish the caller's async generator here, not at
        # garbage collection.
        await self._source.aclose()

    async def _check_middleware(self) -> None:
        # The middleware puts its state in the scope before it calls the app, and removes it
        # when the app is done: the first receive() or send() comes while it is there.
        if self.state is not None:
            return
        state: RequestState | None = self.scope.get(SCOPE_KEY)
        if state is None and not _wraps_middleware(self.app):
            # (With it there, but the state gone: Starlette's error middleware, outside it,
            # answers an exception that escaped the app.)
            self.middleware_missing = True
            self.app_scope.cancel()
            await anyio.lowlevel.checkpoint()  # raises the cancellation
        self.state = state

    async def receive(self) -> Message:
        """uvicorn's: the body as the client sends it, then wait until the client leaves or the
        response is complete, then ``http.disconnect`` forever."""
        await self._check_middleware()
        self.receiving += 1
        try:
            if not self._body_done and self.left_after is None and not self.response_complete:
                message = await self._body_message()
                if message is not None:
                    return message
            while self.left_after is None and not self.response_complete and not self.finished:
                await self._changed.wait()
            return {"type": "http.disconnect"}
        finally:
            self.receiving -= 1

    async def _body_message(self) -> Message | None:
        limit = self.leave._after_bytes
        if limit is not None and self.body_read >= limit:
            self.leave.now()
            return None
        while self._pulled is None:
            if self.left_after is not None or self.response_complete:
                return None
            self._wanted.set()
            await self._changed.wait()
        (chunk, more), self._pulled = self._pulled, None
        reached = limit is not None and (self.body_read + len(chunk) >= limit or not more)
        if limit is not None and self.body_read + len(chunk) > limit:
            chunk, more = chunk[: limit - self.body_read], True
        self.body_read += len(chunk)
        self._body_done = not more
        if reached:
            self.leave.now()
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def upload(self) -> None:
        """The client sends the next chunk of its body when a ``receive()`` wants one.

        A task of its own, so that a ``receive()`` cancelled while it waits for a chunk (as in
        ``Request.is_disconnected()``) does not cancel the caller's async iterable: the chunk
        is delivered to the next ``receive()``, as a server would have buffered it.
        """
        with self._uploading:
            more = True
            while more:
                await self._wanted.wait()
                self._wanted = anyio.Event()
                chunk, more = await self._source.next()
                self._pulled = chunk, more
                self._notify()

    async def send(self, message: Message) -> None:
        await self._check_middleware()
        kind = message["type"]
        self.messages.append(message)
        if self.left_after is not None:
            # As uvicorn: the connection is gone, so send() quietly does nothing.
            self._record(message)
            return
        if self.status is None and kind != "http.response.start":
            raise RuntimeError(EXPECTED_START.format(type=kind))
        if self.response_complete:
            raise RuntimeError(AFTER_COMPLETE.format(type=kind))
        if self.status is not None and kind != "http.response.body":
            raise RuntimeError(EXPECTED_BODY.format(type=kind))
        self._record(message)
        self.leave._sent(message, len(self.chunks))

    def _record(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" and self.status is None:
            self.status = int(message["status"])
            self.headers = list(message.get("headers", []))
        elif kind == "http.response.body":
            self.chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False) and not self.response_complete:
                self.response_complete = True
                self._notify()

    # -- the report ----------------------------------------------------------------------------

    def timed_out(self, timeout: float) -> str:
        if self.status is None:
            response = NO_RESPONSE
        elif self.response_complete:
            response = RESPONSE_COMPLETE
        else:
            response = RESPONSE_STARTED.format(status=self.status, chunks=len(self.chunks))
        if self.left_after is None:
            client = CLIENT_THERE.format(leave=self.given)
        else:
            client = CLIENT_LEFT.format(seconds=self.left_after)
        return TIMED_OUT.format(
            request=self.request,
            timeout=timeout,
            response=response,
            reading=READING if self.receiving else NOT_READING,
            client=client,
        )

    def outcome(self, elapsed: float) -> RequestOutcome:
        state = self.state
        return RequestOutcome(
            request=self.request,
            status=self.status,
            headers=Headers(raw=self.headers),
            chunks=tuple(self.chunks),
            messages=tuple(self.messages),
            response_complete=self.response_complete,
            client_left=self.left_after is not None,
            client_left_before_completion=self.left_before_completion,
            left_after=self.left_after,
            token=None if state is None else state.issued,
            aborted_log=self.aborted_log,
            request_body_read=self.body_read,
            elapsed=elapsed,
            exception=self.exception,
        )


# -- the lifespan ------------------------------------------------------------------------------


def _wraps_middleware(app: object) -> bool:
    # Down the stack, through Starlette's built middleware stack and each middleware's `.app`.
    seen: set[int] = set()
    while app is not None and id(app) not in seen:
        if isinstance(app, RequestAbortedMiddleware):
            return True
        seen.add(id(app))
        app = getattr(app, "middleware_stack", None) or getattr(app, "app", None)
    return False


class _Lifespan:
    """uvicorn's ``lifespan="auto"``: an app that raises before answering has no lifespan."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.scope: dict[str, Any] = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": state,
        }
        self._asked = False
        self.shutdown = anyio.Event()
        self.started = anyio.Event()
        self.stopped = anyio.Event()
        self.answered = False
        self.failure: str | None = None
        self.exception: Exception | None = None
        self._task_group = anyio.create_task_group()

    async def start(self, app: ASGIApp) -> None:
        """Call the app with the lifespan scope, in a task of its own."""
        await self._task_group.__aenter__()
        self._task_group.start_soon(self.run, app)

    async def stop(self) -> None:
        """Cancel the app's lifespan task, and wait for it."""
        # The lifespan task keeps what the app raises: the task group has nothing to raise.
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception as exc:
            if self.answered:
                self.exception = exc
        finally:
            self.started.set()
            self.stopped.set()

    async def receive(self) -> Message:
        if not self._asked:
            self._asked = True
            return {"type": "lifespan.startup"}
        await self.shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind not in _LIFESPAN_MESSAGES:
            raise RuntimeError(NOT_LIFESPAN.format(type=kind))
        self.answered = True
        if kind.endswith(".failed"):
            self.failure = message.get("message", "")
        if kind.startswith("lifespan.startup."):
            self.started.set()
        else:
            self.stopped.set()

    def check(self, phase: str) -> None:
        if self.exception is not None:
            raise self.exception
        if self.failure is not None:
            raise RuntimeError(LIFESPAN_FAILED.format(phase=phase, message=self.failure))


# -- the client --------------------------------------------------------------------------------


class AbortingClient:
    """An in-process ASGI server whose client can leave mid-request.

    ::

        async with AbortingClient(app) as client:
            outcome = await client.get("/stream", leave=leave_after_chunks(3))

    It calls the app as uvicorn does (ASGI spec 2.3): ``receive()`` returns the request body
    as the client sends it, then waits until the client leaves or the response is complete,
    then returns ``http.disconnect`` forever; ``send()`` records each message, raises as uvicorn
    does on a message out of order, and quietly does nothing once the client has left (it still
    records the message). Requests may run concurrently.

    Edge cases: an app that reads after the client left gets ``http.disconnect``, every time. An
    app that never reads its body leaves it unread (only :func:`leave_mid_upload` depends on
    reads). An app that returns without a response gets ``status`` None (uvicorn would answer
    500 for it). An app that never returns is cancelled after ``timeout``.

    Entering the client runs the app's lifespan startup, leaving it runs the shutdown (as
    uvicorn's ``lifespan="auto"``: an app that raises on the lifespan scope before answering is
    taken to have none). What the lifespan yields is in each request's ``scope["state"]``.

    :param app: the app, with :func:`fastapi_abort.install` (or the middleware) applied.
    :param timeout: the bound, in seconds, on each request and on each lifespan phase (10 s by
        default). When it runs out, the app is cancelled and :class:`TimeoutError` says what it
        was doing. An app blocked in a worker thread cannot be cancelled: the client waits for
        the thread (pytest-timeout is the last bound then).
    :param lifespan: run the app's lifespan (True by default).
    :param raise_app_exceptions: re-raise what the app raises (True by default); with False it
        is in :attr:`RequestOutcome.exception`.
    :raises ValueError: if ``timeout`` is not a number > 0.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        lifespan: bool = True,
        raise_app_exceptions: bool = True,
    ) -> None:
        self.app = app
        self.timeout = _check_timeout(timeout)
        self.lifespan = lifespan
        self.raise_app_exceptions = raise_app_exceptions
        self._state: dict[str, Any] = {}
        self._open = False
        self._lifespan: _Lifespan | None = None

    async def __aenter__(self) -> AbortingClient:
        if self.lifespan:
            lifespan = _Lifespan(self._state)
            await lifespan.start(self.app)
            try:
                await self._wait_lifespan(lifespan, lifespan.started, "startup")
            except BaseException:
                await lifespan.stop()
                raise
            self._lifespan = lifespan
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is None:
            return
        lifespan.shutdown.set()
        try:
            await self._wait_lifespan(lifespan, lifespan.stopped, "shutdown")
        finally:
            await lifespan.stop()

    async def _wait_lifespan(self, lifespan: _Lifespan, done: anyio.Event, phase: str) -> None:
        with anyio.move_on_after(self.timeout) as bound:
            await done.wait()
        if bound.cancelled_caught:
            raise TimeoutError(LIFESPAN_TIMED_OUT.format(phase=phase, timeout=self.timeout))
        lifespan.check(phase)

    async def request(
        self,
        method: str,
        target: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: HeaderInput | None = None,
        content: Content | None = None,
        json: Any = None,
        leave: Leave | None = None,
        # Not anyio.fail_after around the call: the kit's own bound can say what the app was
        # doing when the time ran out.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> RequestOutcome:
        """Send a request to the app, make the client leave when ``leave`` says, and report.

        :param method: the HTTP method, such as ``"GET"``.
        :param target: the path, maybe with a ``?query``; percent-encoded as on the wire.
        :param params: more query parameters, appended to those of ``target``.
        :param headers: request headers; ``host`` (``testserver``) and ``content-length`` or
            ``transfer-encoding`` are added unless given.
        :param content: the request body: bytes (one message), or an iterable or async iterable
            of bytes (one message per non-empty chunk, pulled as the app reads, then a last
            empty one). An async iterable still waiting for its next chunk when the client
            leaves is cancelled.
        :param json: a body to send as JSON instead (with ``content-type: application/json``).
        :param leave: when the client leaves (see :class:`Leave`); None: it stays to the end.
        :param timeout: the bound on this request in seconds (the client's by default).
        :returns: what happened. The client stays until the app returns, so a ``leave`` can
            also fire after the response is complete (while a background task runs, say).
        :raises TimeoutError: if the app did not return within the timeout (it is cancelled).
        :raises RuntimeError: if the client is not open, ``leave`` served another request, or
            the app does not have ``RequestAbortedMiddleware`` around it.
        :raises Exception: what the app raised, unless ``raise_app_exceptions`` is False.
        """
        if not self._open:
            raise RuntimeError(NOT_OPEN)
        limit = self.timeout if timeout is None else _check_timeout(timeout)
        if content is not None and json is not None:
            raise ValueError(CONTENT_AND_JSON)
        extra: list[tuple[str, str]] = []
        if json is not None:
            content = jsonlib.dumps(json).encode()
            extra.append(("content-type", "application/json"))
        path, _, query = target.partition("?")
        if params:
            query = "&".join(part for part in (query, urlencode(params)) if part)
        request = f"{method} {path}?{query}" if query else f"{method} {path}"
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": method,
            "root_path": "",
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": _headers(headers, content, extra),
            "state": self._state.copy(),
        }
        exchange = _Exchange(request, scope, _Body(b"" if content is None else content), leave)
        trigger = exchange.leave
        trigger._bind(exchange)
        _catcher.acquire()
        try:
            # Nothing raises in the task group's body (the app's exceptions are kept): anyio
            # would wrap it in an exception group.
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(trigger._run)
                task_group.start_soon(exchange.watchdog, limit)
                task_group.start_soon(exchange.upload)
                await exchange.run(self.app)
                task_group.cancel_scope.cancel()
        finally:
            trigger._unbind()  # done by run() already, unless the task group failed to start
            _catcher.release()
            await exchange.close_body()
        elapsed = time.perf_counter() - exchange.started_at
        if exchange.timeout_message is not None:
            raise TimeoutError(exchange.timeout_message)
        if exchange.middleware_missing:
            raise RuntimeError(MIDDLEWARE_MISSING.format(request=request))
        if exchange.exception is not None and self.raise_app_exceptions:
            raise exchange.exception
        return exchange.outcome(elapsed)

    async def get(
        self,
        target: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: HeaderInput | None = None,
        leave: Leave | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (see request())
    ) -> RequestOutcome:
        """``GET target``: see :meth:`request`."""
        return await self.request(
            "GET", target, params=params, headers=headers, leave=leave, timeout=timeout
        )

    async def post(
        self,
        target: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: HeaderInput | None = None,
        content: Content | None = None,
        json: Any = None,
        leave: Leave | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (see request())
    ) -> RequestOutcome:
        """``POST target``: see :meth:`request`."""
        return await self.request(
            "POST",
            target,
            params=params,
            headers=headers,
            content=content,
            json=json,
            leave=leave,
            timeout=timeout,
        )


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(BAD_TIMEOUT.format(value=timeout))
    if not 0 < timeout < math.inf:
        raise ValueError(BAD_TIMEOUT.format(value=timeout))
    return float(timeout)


def _headers(
    given: HeaderInput | None, content: Content | None, extra: list[tuple[str, str]]
) -> list[tuple[bytes, bytes]]:
    pairs = list(given.items() if isinstance(given, Mapping) else given or ())
    names = {name.lower() for name, _ in pairs}
    if "host" not in names:
        pairs.insert(0, ("host", "testserver"))
    if isinstance(content, bytes) and "content-length" not in names:
        pairs.append(("content-length", str(len(content))))
    elif content is not None and not isinstance(content, bytes) and "content-length" not in names:
        pairs.append(("transfer-encoding", "chunked"))
    pairs.extend(pair for pair in extra if pair[0] not in names)
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
