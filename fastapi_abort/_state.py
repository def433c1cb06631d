"""What the middleware knows about one request: its token, its response, how far it got.

One ``RequestState`` per HTTP request or WebSocket connection, made by the middleware when the
request starts and kept in ``scope[SCOPE_KEY]`` until the app returns. Everything in it runs on
the event loop thread (``def`` code reaches the token through ``anyio.from_thread``).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from contextvars import Context
from typing import TYPE_CHECKING

from ._backend import DelayBatch, call_after_delay
from ._budget import budget_of
from ._config import Config, check_deadline
from ._inbox import Inbox
from ._reason import CancellationReason
from ._source import CancellationTokenSource
from ._token import CancellationToken

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope

#: The scope key under which the middleware keeps the request's state.
SCOPE_KEY = "fastapi_abort.request"


class _Inherit(enum.Enum):
    APP = enum.auto()  # the request has no deadline of its own: the app's applies


#: The request's deadline is the app's (``install(deadline=...)``).
INHERIT = _Inherit.APP


class RequestState:
    """Everything the middleware knows about one request. Lives in ``scope[SCOPE_KEY]``.

    :param scope: the request's scope.
    :param config: the middleware's options.
    :param receive: the server's ``receive``.
    :param websocket: a WebSocket connection, not an HTTP request.
    """

    __slots__ = (
        "aborted",
        "body_bytes",
        "body_messages",
        "budget",
        "config",
        "delayed",
        "ended_with",
        "finished",
        "first_byte_at",
        "inbox",
        "issued",
        "own_deadline",
        "response_complete",
        "response_started",
        "scope",
        "send_error",
        "server_receive",
        "started_at",
        "status_sent",
        "stopping_link",
        "trailers",
        "websocket",
    )

    def __init__(self, scope: Scope, config: Config, receive: Receive, websocket: bool) -> None:
        #: The request's scope. It holds this state under SCOPE_KEY until the app returns, and
        #: then no more (the middleware breaks the cycle, so requests are freed by refcount).
        self.scope = scope
        self.config = config
        self.websocket = websocket
        #: time.perf_counter() when the middleware saw the request.
        self.started_at = time.perf_counter()
        self.server_receive = receive
        #: The server's receive as the app and the watcher share it, once either needs it
        #: (most requests never read: a GET that does not ask for its token). Never replaced.
        self.inbox: Inbox | None = None
        #: The token, once somebody asked for it (token()); None before. Never replaced.
        self.issued: CancellationToken | None = None
        #: The batch this request waits in for the watcher's delay (watch_after()), while it
        #: does: None before, and once the delay passed or the response completed.
        self.delayed: DelayBatch | None = None
        #: The response's start (a WebSocket's accept, or its denial's start) went to the
        #: server. Never reset.
        self.response_started = False
        #: The response's last message went to the server (a WebSocket: its close). Set
        #: before that send returns; never reset. From then on the token cannot trip.
        self.response_complete = False
        #: The start asked for trailers: the response completes with its last trailers.
        self.trailers = False
        #: The status of the response's start, once it went to the server; None before.
        self.status_sent: int | None = None
        #: The ``http.response.body`` messages that went to the server, and their body bytes
        #: (``pathsend`` and ``zerocopysend`` bodies are not counted). Never decrease.
        self.body_messages = 0
        self.body_bytes = 0
        #: time.perf_counter() when the first body byte went to the server; None before.
        self.first_byte_at: float | None = None
        #: The client left before the response was complete. Never reset; the token, if
        #: any, is cancelled with CLIENT_DISCONNECTED at the same moment.
        self.aborted = False
        #: The app has returned (or raised): the token is final.
        self.finished = False
        #: A deadline of the request's own (set_deadline()), or INHERIT.
        self.own_deadline: float | _Inherit | None = INHERIT
        #: Seconds the caller's budget header gave the request (install(max_budget=...)), or
        #: None. Never changed: it caps every deadline the request has (see deadline).
        self.budget = (
            None
            if websocket or config.max_budget is None
            else budget_of(scope["headers"], config.max_budget)
        )
        #: How the request was answered, when fastapi-abort answered it (see _endings).
        self.ended_with: CancellationReason | None = None
        #: What the server's send raised on a WebSocket whose peer left (see _endings).
        self.send_error: OSError | None = None
        #: The token linked with the app's stopping token (stop_on_shutdown), once asked for;
        #: closed when the app returns, so that nothing stays registered on the app's token.
        self.stopping_link: CancellationTokenSource | None = None

    # -- the token -----------------------------------------------------------------------------

    def token(self) -> CancellationToken:
        """The request's token, made on first use. Call on the event loop thread only.

        A token asked for once the client left is cancelled already; once the response is
        complete, it is closed (never cancelled). Otherwise the first call starts the watcher
        (after ``watcher_delay``) and the deadline's timer.
        """
        token = self.issued
        if token is None:
            token = self.issued = CancellationToken()
            if self.aborted:
                token._cancel(CancellationReason.CLIENT_DISCONNECTED, None)
            elif self.response_complete or self.finished:
                token._close()
            else:
                if self.deadline is not None:
                    token._cancel_after(self.remaining())
                self.watch_after(self.config.watcher_delay)
        return token

    def watch_after(self, delay: float) -> None:
        """Start the watcher in ``delay`` seconds (at once on trio, or for 0).

        A request that ends sooner makes no inbox and no task: see docs/how-it-works.md.
        """
        if delay > 0:
            self.delayed = call_after_delay(self, delay)
            if self.delayed is not None:
                return
        self.open_inbox().watch()

    def delay_passed(self, context: Context) -> None:
        """The watcher's delay has passed and the request still runs (asyncio only).

        The watcher starts in (a copy of) the context of the call that asked for the token, as
        a task started then would: what the context holds may matter to the server's
        ``receive``.
        """
        self.delayed = None
        context.run(self.open_inbox().watch)

    def _stop_delay(self) -> None:
        delayed, self.delayed = self.delayed, None
        if delayed is not None:
            # (Out of the batch at once: see DelayBatch for why.)
            delayed.pending.pop(self, None)

    def open_inbox(self) -> Inbox:
        """The request's inbox, made on first use."""
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = Inbox(self, self.server_receive)
        return inbox

    @property
    def deadline(self) -> float | None:
        """Seconds from ``started_at`` to the request's deadline, or None.

        Its own deadline (set_deadline()), else the app's; a WebSocket connection has only a
        deadline of its own. The caller's budget, if any, caps either: the caller waits no
        longer, whatever the route says.
        """
        own = self.own_deadline
        deadline = (None if self.websocket else self.config.deadline) if own is INHERIT else own
        budget = self.budget
        if budget is not None and (deadline is None or budget < deadline):
            return budget
        return deadline

    def remaining(self) -> float:
        """Seconds left until the deadline (0 once it passed; inf without one)."""
        deadline = self.deadline
        if deadline is None:
            return math.inf
        return max(0.0, self.started_at + deadline - time.perf_counter())

    def set_deadline(self, seconds: float | None) -> None:
        """Replace the request's deadline: ``seconds`` from the request's start, or none.

        Takes effect at once if the token exists; once the token is cancelled, nothing
        changes (it keeps the deadline it went by). Call on the event loop thread.

        :raises ValueError: for a bad ``seconds``.
        """
        deadline = check_deadline(seconds)
        token = self.issued
        if token is not None and token.is_cancellation_requested:
            return
        self.own_deadline = deadline
        if token is not None:
            token._cancel_after(self.remaining())

    # -- what the server reported --------------------------------------------------------------

    def disconnected(self) -> bool:
        """The server said the client is gone (its disconnect message, or a failed send).

        Returns whether that is a departure: the response was incomplete. Its token, if any,
        must then trip (trip()).
        """
        if self.response_complete or self.aborted:
            return False
        self.aborted = True
        return True

    def trip(self) -> Callable[[], None] | None:
        """Cancel the token, if there is one, for the client's departure.

        It reads as cancelled at once; returns what wakes its waiters and runs its callbacks,
        for the caller to call (None: nothing to wake).
        """
        token = self.issued
        if token is None:
            return None
        return token._mark_cancelled(CancellationReason.CLIENT_DISCONNECTED, None)

    # -- where the response is (the app's send, _channels, calls these) -----------------------

    def started(self) -> None:
        """The response's start goes to the server (a WebSocket: its accept, or its denial's
        start)."""
        self.response_started = True
        inbox = self.inbox
        if inbox is not None:
            inbox.changed()  # the watcher reads on once the response started

    def completed(self) -> None:
        """The response's last message goes to the server.

        Called before the server's send: some servers report a disconnect for a finished
        response before that send returns, and it must never read as "client gone".
        """
        self.response_complete = True
        token = self.issued
        if token is not None:  # (there is no watcher without a token)
            self._stop_delay()
            inbox = self.inbox
            if inbox is not None:
                inbox.stop_watching()
            if not self.aborted:
                token._close()

    def sent_other(self, message: Message) -> None:
        """Note any other message: trailers, ``pathsend``, ``zerocopysend``, and a WebSocket's.

        A message out of order is left for the server to refuse, as without this middleware.
        """
        kind: str = message["type"]
        if self.websocket:
            if kind == "websocket.close" or (
                kind == "websocket.http.response.body" and not message.get("more_body", False)
            ):
                self.completed()
            elif kind == "websocket.accept" or kind == "websocket.http.response.start":
                self.started()
        elif (
            (kind == "http.response.trailers" and not message.get("more_trailers", False))
            or kind == "http.response.pathsend"
            or (
                kind == "http.response.zerocopysend"
                and not (message.get("more_body", False) or self.trailers)
            )
        ):
            self.completed()

    def finish(self) -> None:
        """The app returned: stop the watcher; the token is final from now on."""
        self.finished = True
        token = self.issued
        if token is not None:  # (only a token waits for the watcher's delay)
            self._stop_delay()
        inbox = self.inbox
        if inbox is not None:
            # The inbox refers back to this state: without this, every request that read or
            # took its token would be left to the cyclic garbage collector (docs/benchmarks.md).
            self.inbox = None
            inbox.close()
        link = self.stopping_link
        if link is not None:
            self.stopping_link = None
            link.close()
        if token is not None:
            token._close()
