"""What the observability tests share: one app shape, built with and without fastapi-abort, wrapped
so that the test can ask the server process what happened without being observed itself.

The app (:func:`build`) has the same routes in every variant; the last path segment of every test
request is its id (:func:`tests.raw_http.new_id`). A variant is the list of steps applied to the
app after its routes are added, in order: :data:`INSTALL` (fastapi-abort's ``install``) and the
observability library's own setup (``instrument_app``, ``add_middleware``...). Without
:data:`INSTALL`, the endpoints get :data:`CancellationToken.NONE`, which never trips, and hold
for :data:`PLAIN_HOLD` seconds instead: plain FastAPI then shows what the library records on its
own for a client that left.

:class:`Observed` wraps the whole app (outside every middleware, fastapi-abort's and the
library's) and answers the test's own requests under ``/_test/`` itself, so that no library
records them:

* ``/_test/await/{rid}/{what}?timeout=``: the request's :class:`tests.recording.Record` once
  event ``what`` happened (``started``, ``finished``...), ``happened`` saying whether it did;
* ``/_test/done/{rid}?timeout=``: once the app's call for the request returned or raised (every
  middleware done: spans ended, log lines written, metrics counted), with ``done``, the
  ``status`` it sent (``None`` if none) and ``raised`` (the name of what escaped to the server,
  ``None`` if nothing);
* ``/_test/collected/{rid}``: what the library recorded for the request, as the app's
  ``collect`` function reports it (JSON).

Every wait is bounded on the server side; the test adds its own bound (httpx's timeout).

Stable API (the streaming and middleware tests may import it): :func:`build`, :data:`INSTALL`,
:class:`Observed`, :class:`Client`, :func:`leave_mid_request`, :data:`ENDPOINTS`,
:data:`ABORTS`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import fastapi
import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_abort import CancellationToken, install, request_aborted
from tests import recording
from tests.raw_http import leave, read_until, request_bytes
from tests.serve import Served

Step = Callable[[FastAPI], None]
Collect = Callable[[str], Any]

#: How long an endpoint without the plugin holds (seconds) before it answers a client that is
#: gone: its token never trips. With the plugin, endpoints hold for :data:`HOLD`.
PLAIN_HOLD = 1.0
HOLD = 30.0
#: Seconds between two chunks of a stream.
TICK = 0.05
PREFIX = "/_test/"
#: The routes of every variant, by name: what a normal request asks for.
ENDPOINTS = {
    "async": "/ok/{rid}",
    "def": "/sync-ok/{rid}",
    "stream": "/stream/{rid}?n=3",
    "def-stream": "/sync-stream/{rid}?n=3",
}
#: The routes a client leaves, by name: mid-endpoint (async, ``def``) and mid-stream (an async
#: generator that checks the token between chunks, a ``def`` generator on
#: ``ct.sleep_blocking()``).
ABORTS = {
    "async": "/hold/{rid}",
    "def": "/sync-hold/{rid}",
    "stream": "/stream/{rid}",
    "def-stream": "/sync-stream/{rid}",
}
#: Not in ABORTS (every library's tests go through those): an async generator whose
#: ``ct.sleep()`` is shielded from Starlette's own cancellation.
SHIELDED_STREAM = "/shielded-stream/{rid}"
NOT_OBSERVED = "no route {path!r} under /_test/"


def INSTALL(app: FastAPI) -> None:
    """The step that installs fastapi-abort."""
    install(app)


class Recorder(recording.Recorder[recording.Record]):
    """The records of one app; made on the event loop, changed from threads through it."""

    def __init__(self) -> None:
        super().__init__(recording.Record)

    def started_in_thread(self, rid: str) -> None:
        anyio.from_thread.run_sync(lambda: self.record(rid).events["started"].set())

    def finished_in_thread(self, rid: str) -> None:
        """Set ``finished`` from a worker thread, or from the event loop's own thread: a ``def``
        generator left unfinished (Starlette stopped iterating it) is closed by the garbage
        collector, wherever that runs."""

        def finish() -> None:
            self.record(rid).events["finished"].set()

        try:
            anyio.from_thread.run_sync(finish)
        except RuntimeError:  # not in a worker thread (anyio's NoEventLoopError is one)
            finish()


def build(steps: Sequence[Step], recorder: Recorder, **settings: Any) -> FastAPI:
    """A FastAPI app (``settings`` go to ``FastAPI()``) with the routes of :data:`ENDPOINTS` and
    :data:`ABORTS`, then ``steps`` applied in order."""
    plugin = INSTALL in steps
    hold = HOLD if plugin else PLAIN_HOLD
    # Looked up now: OpenTelemetry's global instrument() replaces fastapi.FastAPI.
    app: FastAPI = fastapi.FastAPI(**settings)

    async def token(request: Request) -> CancellationToken:
        # Async: a `def` dependency would take a worker thread of its own.
        return await request_aborted(request) if plugin else CancellationToken.NONE

    @app.get("/ok/{rid}")
    async def ok(rid: str) -> dict[str, str]:
        return {"ok": rid}

    @app.get("/sync-ok/{rid}")
    def sync_ok(rid: str) -> dict[str, str]:
        return {"ok": rid}

    @app.get("/hold/{rid}")
    async def hold_async(rid: str, ct: CancellationToken = Depends(token)) -> dict[str, str]:
        rec = recorder.watch(rid, ct)
        with recording.running(rec):
            await ct.sleep(hold)
        return {"held": rid}

    @app.get("/sync-hold/{rid}")
    def hold_def(rid: str, ct: CancellationToken = Depends(token)) -> dict[str, str]:
        anyio.from_thread.run_sync(recorder.watch, rid, ct)
        recorder.started_in_thread(rid)
        try:
            ct.sleep_blocking(hold)
        finally:
            recorder.finished_in_thread(rid)
        return {"held": rid}

    @app.get("/stream/{rid}")
    async def stream_async(
        rid: str, n: int | None = None, ct: CancellationToken = Depends(token)
    ) -> StreamingResponse:
        rec = recorder.watch(rid, ct)
        count = n if n is not None else round(hold / TICK)

        async def chunks() -> AsyncIterator[bytes]:
            # The token ends the stream by a check, not by ct.sleep(): an OperationCancelled
            # out of a body whose response started meets the def-stream defect whenever it
            # beats Starlette's own disconnect listener (about 1 in 60 on uvicorn), and a test
            # must not depend on that race.
            with recording.running(rec):
                for i in range(count):
                    yield f"data: {i}\n\n".encode()
                    await anyio.sleep(TICK)
                    if ct.is_cancellation_requested:
                        return

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.get("/shielded-stream/{rid}")
    async def stream_shielded(
        rid: str, ct: CancellationToken = Depends(token)
    ) -> StreamingResponse:
        # The async form of the def-stream defect, without its race: Starlette's disconnect
        # listener cannot cancel a shielded wait, so the token's OperationCancelled always
        # comes out of the body (as it always does out of a def generator's thread).
        rec = recorder.watch(rid, ct)

        async def chunks() -> AsyncIterator[bytes]:
            with recording.running(rec):
                for i in range(round(hold / TICK)):
                    yield f"data: {i}\n\n".encode()
                    with anyio.CancelScope(shield=True):
                        await ct.sleep(TICK)

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.get("/sync-stream/{rid}")
    def stream_def(
        rid: str, n: int | None = None, ct: CancellationToken = Depends(token)
    ) -> StreamingResponse:
        anyio.from_thread.run_sync(recorder.watch, rid, ct)
        count = n if n is not None else round(hold / TICK)

        def chunks() -> Iterator[bytes]:
            recorder.started_in_thread(rid)
            try:
                for i in range(count):
                    yield f"data: {i}\n\n".encode()
                    ct.sleep_blocking(TICK)
            finally:
                recorder.finished_in_thread(rid)

        return StreamingResponse(chunks(), media_type="text/event-stream")

    for step in steps:
        step(app)
    return app


@dataclass
class _Outcome:
    done: anyio.Event
    status: int | None = None
    raised: str | None = None


class Observed:
    """The app as the server runs it: ``app`` (any ASGI app) with the ``/_test/`` routes answered
    here, and the end of every other request noted (see the module's docstring).

    Pure ASGI and a pass-through for everything else: it neither reads ``receive`` nor changes
    a message. Its state is touched on the event loop only.
    """

    def __init__(self, app: ASGIApp, recorder: Recorder, collect: Collect) -> None:
        self.app = app
        self.recorder = recorder
        self.collect = collect
        self._outcomes: dict[str, _Outcome] = {}

    def _outcome(self, rid: str) -> _Outcome:
        if rid not in self._outcomes:
            self._outcomes[rid] = _Outcome(anyio.Event())
        return self._outcomes[rid]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(PREFIX):
            await self._answer(scope, send)
            return
        outcome = self._outcome(path.rstrip("/").rsplit("/", 1)[-1])

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except BaseException as exc:
            outcome.raised = type(exc).__name__
            raise
        finally:
            outcome.done.set()

    async def _answer(self, scope: Scope, send: Send) -> None:
        parts = scope["path"][len(PREFIX) :].split("/")
        query = dict(httpx.QueryParams(scope["query_string"].decode()))
        timeout = float(query.get("timeout", "10"))
        body: Any
        if parts[0] == "await" and len(parts) == 3:
            rec = self.recorder.record(parts[1])
            with anyio.move_on_after(timeout):
                await rec.events[parts[2]].wait()
            body = {"happened": rec.events[parts[2]].is_set(), **rec.report()}
        elif parts[0] == "done" and len(parts) == 2:
            outcome = self._outcome(parts[1])
            with anyio.move_on_after(timeout):
                await outcome.done.wait()
            body = {
                "done": outcome.done.is_set(),
                "status": outcome.status,
                "raised": outcome.raised,
            }
        elif parts[0] == "collected" and len(parts) == 2:
            body = self.collect(parts[1])
        else:
            body = {"error": NOT_OBSERVED.format(path=scope["path"])}
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class Collected:
    """Items a library hands over, from any thread, kept for :func:`Observed`'s ``collect``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def add(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items)


class Client:
    """The test's side of one served variant."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.base = f"http://127.0.0.1:{served.port}"

    def ask(self, path: str, timeout: float = 15.0) -> Any:
        response = httpx.get(
            f"{self.base}{PREFIX}{path}", params={"timeout": timeout}, timeout=timeout + 15
        )
        response.raise_for_status()
        return response.json()

    def wait(self, rid: str, what: str) -> dict[str, Any]:
        """The request's record once ``what`` happened; fails if it did not within 15 s."""
        result: dict[str, Any] = self.ask(f"await/{rid}/{what}")
        assert result["happened"], (what, result, self.served.output())
        return result

    def done(self, rid: str) -> dict[str, Any]:
        """How the app's call for the request ended; fails if it did not within 15 s."""
        result: dict[str, Any] = self.ask(f"done/{rid}")
        assert result["done"], (result, self.served.output())
        return result

    def collected(self, rid: str) -> Any:
        return self.ask(f"collected/{rid}")

    def request(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """A normal request of ``path``, read to its end."""
        return httpx.get(f"{self.base}{path}", headers=headers, timeout=30)

    def leave_mid_request(
        self, path: str, rid: str, how: str = "close", headers: tuple[tuple[str, str], ...] = ()
    ) -> dict[str, Any]:
        """Request ``path`` (with ``headers``), wait until its code started (for a stream: its
        first chunk came), leave the way ``how`` says (:func:`tests.raw_http.leave`), and return
        how the app's call ended (:meth:`done`)."""
        with self.served.connect() as sock:
            sock.sendall(request_bytes(path, headers=headers))
            self.wait(rid, "started")
            if "stream" in path:
                read_until(sock, b"data: 0")
            leave(sock, how)
        return self.done(rid)


def leave_mid_request(client: Client, name: str, rid: str) -> dict[str, Any]:
    """Leave the route ``ABORTS[name]`` of request ``rid`` mid-request (see
    :meth:`Client.leave_mid_request`)."""
    return client.leave_mid_request(ABORTS[name].format(rid=rid), rid)


#: Attributes that differ between any two requests: the client's port.
VOLATILE_KEYS = frozenset({"net.peer.port", "client.port"})


def normalized(value: Any, rid: str, port: int, drop: frozenset[str] = VOLATILE_KEYS) -> Any:
    """``value`` (JSON) with the request id written ``{rid}``, the server's port ``{port}``,
    and the keys in ``drop`` left out, so that two requests' records compare equal when only
    those differ."""
    if isinstance(value, dict):
        return {
            key: normalized(item, rid, port, drop) for key, item in value.items() if key not in drop
        }
    if isinstance(value, list):
        return [normalized(item, rid, port, drop) for item in value]
    if isinstance(value, str):
        return value.replace(rid, "{rid}").replace(str(port), "{port}")
    if value == port and isinstance(value, int):
        return "{port}"
    return value


def unordered(values: list[Any]) -> list[str]:
    """``values`` as sorted JSON texts: for records whose order is the interleaving of
    concurrent work (spans of a stream's sends and its disconnect listener's receives)."""
    return sorted(json.dumps(value, sort_keys=True) for value in values)
