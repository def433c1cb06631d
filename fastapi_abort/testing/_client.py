"""The client: :class:`AbortingClient`, an in-process ASGI server whose client can leave.

It builds each request's scope, runs the app in an ``_Exchange`` beside the request's
:class:`~fastapi_abort.testing.Leave` and a watchdog, and turns what happened into a
:class:`~fastapi_abort.testing.RequestOutcome`.
"""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlencode

import anyio

from .._checks import is_seconds
from ._body import Content, _Body
from ._exchange import _Exchange
from ._leave import Leave
from ._lifespan import _Lifespan
from ._outcome import RequestOutcome, _catcher

if TYPE_CHECKING:
    from types import TracebackType

    from starlette.types import ASGIApp

MIDDLEWARE_MISSING = (
    "{request}: the app called receive() or send() without RequestAbortedMiddleware around it, "
    "so nothing would notice the client leave. Call fastapi_abort.install(app) right after "
    "creating the app (or add RequestAbortedMiddleware), and give AbortingClient the outermost "
    "app."
)
NOT_OPEN = (
    "The client is not open: use it as `async with AbortingClient(app) as client:` and send "
    "requests inside that block."
)
CONTENT_AND_JSON = "Pass content= or json=, not both."
BAD_TIMEOUT = "timeout must be a number of seconds > 0, got {value!r}"

DEFAULT_TIMEOUT = 10.0

HeaderInput = Mapping[str, str] | Sequence[tuple[str, str]]


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
                await lifespan.wait(lifespan.started, "startup", self.timeout)
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
            await lifespan.wait(lifespan.stopped, "shutdown", self.timeout)
        finally:
            await lifespan.stop()

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
    if not is_seconds(timeout, zero=False):
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
