"""Binding the token to the request: the FastAPI dependency and the accessor behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import anyio.from_thread
from fastapi import Depends
from starlette.requests import HTTPConnection

from ._backend import on_event_loop
from ._config import check_deadline
from ._state import SCOPE_KEY, RequestState
from ._token import CancellationToken

MIDDLEWARE_MISSING = (
    "The request-aborted token needs RequestAbortedMiddleware, and it did not run for this "
    "request. Call fastapi_abort.install(app) once, right after creating the app (or add it by "
    "hand: app.add_middleware(RequestAbortedMiddleware)). If the app is mounted inside another "
    "one, install it on the outermost app."
)
FOREIGN_THREAD = (
    "get_request_aborted() was called for the first time in a thread that is not one of anyio's "
    "worker threads, so it cannot reach the event loop. Get the token on the event loop (a "
    "Depends(request_aborted) parameter) and pass it to the thread."
)


def get_request_aborted(request: HTTPConnection) -> CancellationToken:
    """Return the token that is cancelled when the client of ``request`` goes away.

    The equivalent of ASP.NET Core's ``HttpContext.RequestAborted``: every call for the same
    request returns the same object, whoever calls it (the endpoint, any dependency, middleware
    inside ``RequestAbortedMiddleware``, code in a worker thread). Tokens of different requests
    are never the same object.

    The token is cancelled, with reason :attr:`CancellationReason.CLIENT_DISCONNECTED`, when the
    client disconnects before the response is complete. Once the response is complete (or the
    app has returned), it can never be cancelled any more.

    Callable on the event loop and in anyio worker threads (where FastAPI runs ``def`` endpoints
    and dependencies).

    On a WebSocket connection, the token is cancelled when the peer disconnects before the app
    closed the connection.

    :raises RuntimeError: if ``RequestAbortedMiddleware`` did not run for this request.
    """
    state = request_state(request)
    token = state.issued
    if token is not None:
        return token
    if on_event_loop():
        return state.token()
    try:
        return anyio.from_thread.run_sync(state.token)
    except RuntimeError as exc:
        if "AnyIO worker thread" not in str(exc):  # pragma: no cover - not ours to rename
            raise
        raise RuntimeError(FOREIGN_THREAD) from exc


async def request_aborted(request: HTTPConnection) -> CancellationToken:
    """FastAPI dependency: the request's :class:`CancellationToken`.

    ::

        @app.get("/report")
        async def report(ct: CancellationToken = Depends(request_aborted)): ...

    It takes only the connection (a ``Request`` or a ``WebSocket``), so it adds nothing to the
    OpenAPI schema, and it returns the same token as :func:`get_request_aborted` and every
    other ``Depends(request_aborted)`` of the request, ``use_cache=False`` included. See
    :func:`get_request_aborted`.
    """
    # get_request_aborted() without its thread check: an async dependency runs on the loop.
    return request_state(request).token()


#: ``Annotated`` alias: ``async def endpoint(ct: RequestAborted): ...``
RequestAborted = Annotated[CancellationToken, Depends(request_aborted)]


def request_state(request: HTTPConnection) -> RequestState:
    """The state the middleware keeps for ``request``.

    :raises RuntimeError: (:data:`MIDDLEWARE_MISSING`) if the middleware did not run for it.
    """
    state: RequestState | None = request.scope.get(SCOPE_KEY)
    if state is None:
        raise RuntimeError(MIDDLEWARE_MISSING)
    return state


def deadline(seconds: float | None) -> Callable[[HTTPConnection], Awaitable[None]]:
    """A dependency that gives a route its own deadline, replacing ``install(deadline=...)``.

    ::

        @app.get("/report", dependencies=[Depends(deadline(5))])
        async def report(ct: RequestAborted): ...

    The deadline counts from the start of the request (when the middleware saw it), not from
    when the dependency runs. ``None`` removes the app-wide deadline for the route. When it
    passes, the request's token is cancelled with reason :attr:`CancellationReason.DEADLINE`;
    an :class:`OperationCancelled` that escapes before the response started becomes a 504
    ``application/problem+json`` response, logged once at WARNING. Once the token is cancelled,
    the deadline can no longer change.

    :param seconds: a number of seconds > 0, or ``None``.
    :raises ValueError: at once, for a bad ``seconds``.
    """
    checked = check_deadline(seconds)

    async def request_deadline(request: HTTPConnection) -> None:
        request_state(request).set_deadline(checked)

    return request_deadline


async def preemptive(request: HTTPConnection) -> AsyncIterator[None]:
    """A dependency that makes its routes preemptive: cancelled at their next ``await`` when
    the request's token is cancelled (the client left, or the deadline passed).

    ::

        @app.get("/draw", dependencies=[Depends(preemptive)])    # one route
        app = FastAPI(dependencies=[Depends(preemptive)])         # every route

    Everything after this dependency runs inside :meth:`CancellationToken.scope`: the other
    dependencies, the endpoint and, with FastAPI's default dependency scope, the response. The
    ``await`` in progress is cancelled (``finally`` blocks and ``async with`` exits run, as for
    any cancellation), and the request ends as :class:`OperationCancelled`: the quiet 499 or the
    deadline's 504. Cleanup that must itself ``await`` after the cancellation needs a shield
    (``with anyio.CancelScope(shield=True):``), as always with anyio and Trio.

    A ``def`` endpoint or dependency runs in a worker thread, which cannot be interrupted: it
    runs to its end (check the token in it), and the request ends then. Put ``preemptive`` first
    in the route's dependencies: dependencies with ``yield`` that come before it clean up
    outside the cancellation.
    """
    with get_request_aborted(request).scope():
        yield
