"""The app-wide token that trips when the server starts to shut down: ApplicationStopping.

``install(app, stopping=True)`` wraps the app's lifespan. At its startup, which runs in the
process and on the loop that serve the requests, after the server installed its own signal
handlers, the handlers of SIGINT and SIGTERM are chained: ours schedules the trip on the loop,
then calls the server's handler, which goes on as before. At the lifespan shutdown the server's
handlers are put back and the token trips, if no signal tripped it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from ._backend import call_soon_threadsafe
from ._config import NO_SIGNAL_HOOK, NOT_STOPPING, STOPPING_SIGNALS
from ._dependency import request_state
from ._reason import CancellationReason
from ._source import CancellationTokenSource
from ._token import CancellationToken

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("fastapi_abort")

#: Where the app keeps its :class:`Stopping` (``app.state``), and where every request of it
#: finds it (the scope: routes of mounted apps, whose ``request.app`` is theirs, find it too).
STATE_ATTRIBUTE = "fastapi_abort_stopping"
SCOPE_KEY = "fastapi_abort.stopping"

Handler = Callable[[int, FrameType | None], Any]


class Stopping:
    """The stopping token of one app, and the lifespan wrapper that trips it.

    Invariants: ``_source`` is the source of the current serving (a new one at a lifespan
    startup once the last one tripped); ``_previous`` maps each signal chained now to the
    server's handler, and is empty outside a lifespan.
    """

    def __init__(self) -> None:
        self._source = CancellationTokenSource()
        self._previous: dict[int, Handler] = {}
        #: Ours, while chained: what the restore checks is still installed.
        self._handler: Handler | None = None

    @property
    def token(self) -> CancellationToken:
        """The token of the current serving (see :func:`stopping_token`)."""
        return self._source.token

    def wrap(self, app: Starlette) -> None:
        """Run :meth:`serving` around the app's lifespan (``app.router.lifespan_context``)."""
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            async with inner(app) as state:
                with self.serving():
                    yield state

        app.router.lifespan_context = lifespan

    def around(self, app: ASGIApp) -> ASGIApp:
        """``app``, with this :class:`Stopping` put in the scope of every connection."""

        async def with_stopping(scope: Scope, receive: Receive, send: Send) -> None:
            scope[SCOPE_KEY] = self
            await app(scope, receive, send)

        return with_stopping

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Chain the signal handlers for one serving; restore them and trip the token after."""
        if self._source.is_cancellation_requested:  # served again in the same process
            self._source = CancellationTokenSource()
        source = self._source
        call_soon = call_soon_threadsafe("install(app, stopping=True)")
        self._chain(lambda: call_soon(lambda: source.cancel(CancellationReason.SHUTDOWN)))
        try:
            yield
        finally:
            self._restore()
            source.cancel(CancellationReason.SHUTDOWN)

    def _chain(self, trip: Callable[[], object]) -> None:
        # This serving's own. A handler of ours still in place after the restore (saved by a
        # second app that chained onto it, say, and put back by it) passes the signal on to
        # the server's handler all the same; its trip is then of a token cancelled already.
        previous: dict[int, Handler] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            # A signal handler runs between two bytecodes of whatever the main thread was
            # doing: only schedule the trip here (the token's callbacks run on the loop).
            with suppress(RuntimeError):  # a loop closed under a late signal: nothing to trip
                trip()
            previous[signum](signum, frame)

        missing = []
        for name in STOPPING_SIGNALS:
            signum = getattr(signal, name)
            current = signal.getsignal(signum)
            # Only a handler of Python's own: SIG_DFL and SIG_IGN mean the server does not
            # handle the signal here, and chaining would change what it does.
            if not callable(current):
                missing.append(name)
                continue
            previous[signum] = current  # before ours is in place: a signal may come at once
            try:
                signal.signal(signum, handler)
            except ValueError:  # not the main thread: signals are not ours to touch
                del previous[signum]
                missing.append(name)
        self._handler, self._previous = handler, dict(previous)
        if missing:
            logger.warning(NO_SIGNAL_HOOK, " and ".join(missing))

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            # Someone replaced ours since (asyncio's remove_signal_handler does): theirs stays.
            if signal.getsignal(signum) is self._handler:
                signal.signal(signum, handler)


def _stopping(app: Starlette) -> Stopping:
    stopping: Stopping | None = getattr(app.state, STATE_ATTRIBUTE, None)
    if stopping is None:
        raise RuntimeError(NOT_STOPPING.format(app=type(app).__name__))
    return stopping


def install_stopping(app: Starlette) -> Stopping:
    """Give ``app`` a stopping token, tripped from the server's signal handling; put
    :meth:`Stopping.around` inside the middleware."""
    stopping = Stopping()
    setattr(app.state, STATE_ATTRIBUTE, stopping)
    stopping.wrap(app)
    return stopping


def stopping_token(app: Starlette) -> CancellationToken:
    """The app-wide token that trips, with reason :attr:`CancellationReason.SHUTDOWN`, when the
    server starts to shut down: ASP.NET Core's ``IHostApplicationLifetime.ApplicationStopping``.

    It trips when the process that serves the app receives SIGINT or SIGTERM through the
    server's own handler (the request tokens keep running: the server's graceful period goes
    on), or at the lifespan shutdown at the latest. It is never cancelled for one request, and
    a token taken from it is never closed by fastapi-abort: link to it
    (``CancellationTokenSource(ct, stopping_token(app))``, closed after use) rather than
    registering callbacks that outlive the request. Served again in the same process (a second
    lifespan startup, as with two ``TestClient`` blocks), the app gets a new token once the old
    one tripped.

    :raises RuntimeError: if ``install(app, stopping=True)`` was not called for ``app``.
    """
    return _stopping(app).token


async def stop_on_shutdown(request: HTTPConnection) -> CancellationToken:
    """FastAPI dependency: the request's token linked with the app's :func:`stopping_token`.

    ::

        @app.get("/events")
        async def events(ct: CancellationToken = Depends(stop_on_shutdown)): ...

    The token trips when the client leaves (``CLIENT_DISCONNECTED``), at the request's deadline
    (``DEADLINE``), or as soon as the server starts to shut down (``SHUTDOWN``), whichever comes
    first, with that reason. Meant for responses that never end by themselves (server-sent
    events, long polls, WebSockets); other requests keep the server's whole graceful period.
    Every consumer in a request gets the same token. The link is released when the app
    returns, after the response, whatever FastAPI's version does with the exit of dependencies
    with ``yield`` (some releases, 0.115 among them, run it before a ``StreamingResponse`` is
    sent): nothing stays registered on the app-wide token.

    An :class:`OperationCancelled` for ``SHUTDOWN`` that escapes the endpoint before the
    response started (a long poll) is answered with a 503, problem details and
    ``Retry-After: 1``, logged once at INFO, and reported to the ``on_abort`` hook; a WebSocket
    is closed with code 1001. Once a response has started it can only be cut short: catch it in
    the stream and end the response, as the example of ``docs/shutdown.md`` does.

    Routes of an app mounted inside the installed one get the installed app's token.

    :raises RuntimeError: if ``install(app, stopping=True)`` was not called for the app that
        serves the request.
    """
    stopping: Stopping | None = request.scope.get(SCOPE_KEY)
    if stopping is None:
        raise RuntimeError(NOT_STOPPING.format(app=type(request.app).__name__))
    state = request_state(request)
    link = state.stopping_link
    if link is None:
        link = state.stopping_link = CancellationTokenSource(state.token(), stopping.token)
    return link.token


#: ``Annotated`` alias: ``async def endpoint(ct: StopOnShutdown): ...``
StopOnShutdown = Annotated[CancellationToken, Depends(stop_on_shutdown)]
