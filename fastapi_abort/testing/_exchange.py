"""The server side of one request: the app's ``receive`` and ``send``, as uvicorn behaves.

The client of :class:`~fastapi_abort.testing.AbortingClient` runs one :class:`_Exchange` per
request, beside the request's :class:`~fastapi_abort.testing.Leave` and a watchdog; what the
exchange recorded becomes the :class:`~fastapi_abort.testing.RequestOutcome`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from starlette.datastructures import Headers

from .._middleware import RequestAbortedMiddleware
from .._state import SCOPE_KEY, RequestState
from ._leave import Leave
from ._outcome import RequestOutcome, _current

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message

    from ._body import _Body

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
# The texts uvicorn raises with for the same mistakes (protocols/http/h11_impl.py).
EXPECTED_START = "Expected ASGI message 'http.response.start', but got '{type}'."
EXPECTED_BODY = "Expected ASGI message 'http.response.body', but got '{type}'."
AFTER_COMPLETE = "Unexpected ASGI message '{type}' sent, after response already completed."


def _wraps_middleware(app: object) -> bool:
    # Down the stack, through Starlette's built middleware stack and each middleware's `.app`.
    seen: set[int] = set()
    while app is not None and id(app) not in seen:
        if isinstance(app, RequestAbortedMiddleware):
            return True
        seen.add(id(app))
        app = getattr(app, "middleware_stack", None) or getattr(app, "app", None)
    return False


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
