"""The live panel: the last requests and how each ended, pushed to the index page as it happens.

A pure ASGI middleware wraps the whole app and records each request: running, then completed
(with its status), cancelled (the client left: 499) or ended by its deadline (504), after how
long. It learns of the last two from fastapi-abort's ``on_abort`` hook (``record_abort``), which
the app passes to ``install()``. A WebSocket is not reported to the hook (a peer that leaves is a
WebSocket's normal end), so the middleware sees the peer leave itself: a
``websocket.disconnect`` before the app closed the connection. The page reads
``/panel/events``, a server-sent-events stream that sends the whole (short) list on every change.
It never ends by itself: its token is linked with the app's stopping token
(``Depends(stop_on_shutdown)``), so that Ctrl+C ends it at once, with an event that asks the page
to reconnect, instead of keeping uvicorn waiting for it.

Memory is bounded: the panel keeps the last ``SIZE`` requests, and subscribers share one event
that is set on every change, so there is no queue per subscriber to grow.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from itertools import count

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_abort import (
    AbortedRequest,
    CancellationReason,
    OperationCancelled,
    StopOnShutdown,
)

SIZE = 20  # requests shown
NOT_SHOWN = frozenset({"/panel/events", "/favicon.ico"})
#: The panel stream's last event when the server shuts down: EventSource reconnects after 2 s.
RESTART = "event: restart\nretry: 2000\ndata: server restarting\n\n"


@dataclass
class Entry:
    id: int
    method: str
    path: str
    outcome: str = "running"  # then "completed", "cancelled", "deadline" or "failed"
    status: int | None = None  # a WebSocket's: the close code
    elapsed: float | None = None


class Panel:
    """The last ``size`` requests. Used on the event loop thread only."""

    def __init__(self, size: int = SIZE) -> None:
        self.entries: deque[Entry] = deque(maxlen=size)
        self._ids = count(1)
        #: Counts the changes, so that a subscriber misses none between two waits.
        self.version = 0
        self._changed: anyio.Event | None = None

    def start(self, method: str, path: str) -> Entry:
        entry = Entry(next(self._ids), method, path)
        self.entries.append(entry)
        self.changed()
        return entry

    def changed(self) -> None:
        self.version += 1
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    async def wait_changed(self, since: int) -> None:
        """Return once ``version`` is past ``since``: at once if a change came meanwhile."""
        while self.version == since:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def snapshot(self) -> str:
        return json.dumps([asdict(entry) for entry in reversed(self.entries)])


# The entry of the request being served, for record_abort() below.
current: ContextVar[Entry | None] = ContextVar("current", default=None)


class Recorder:
    """Pure ASGI middleware: one panel entry per HTTP request and WebSocket connection. Wrap the
    app that install() set up, so that its ``on_abort`` hook runs inside this middleware."""

    def __init__(self, app: ASGIApp, panel: Panel) -> None:
        self.app = app
        self.panel = panel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in NOT_SHOWN:
            await self.app(scope, receive, send)
            return
        entry = self.panel.start(scope.get("method", "WEBSOCKET"), scope["path"])
        started = time.perf_counter()
        closed = False

        async def record_status(message: Message) -> None:
            nonlocal closed
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            elif message["type"] == "websocket.close":
                closed = True
                entry.status = message.get("code", 1000)
            await send(message)

        async def record_leaving() -> Message:
            received = await receive()
            if received["type"] == "websocket.disconnect" and not closed:
                entry.outcome = "cancelled"
                entry.status = received.get("code", 1005)
            return received

        reset = current.set(entry)
        try:
            await self.app(scope, receive if kind == "http" else record_leaving, record_status)
        except BaseException:
            entry.outcome = "failed"
            raise
        finally:
            current.reset(reset)
            if entry.outcome == "running":
                entry.outcome = "completed"
            if entry.elapsed is None:
                entry.elapsed = time.perf_counter() - started
            self.panel.changed()


def record_abort(request: AbortedRequest) -> None:
    """The ``on_abort`` hook: marks the current entry cancelled (the client left) or ended by
    its deadline, with the status and the seconds of work fastapi-abort reports."""
    entry = current.get()
    if entry is None:  # not recorded: /panel/events itself
        return
    deadline = request.reason is CancellationReason.DEADLINE
    entry.outcome = "deadline" if deadline else "cancelled"
    entry.status = request.status_code
    entry.elapsed = request.elapsed


router = APIRouter(tags=["panel"])


@router.get("/panel/events", response_class=StreamingResponse)
async def events(request: Request, ct: StopOnShutdown) -> StreamingResponse:
    panel: Panel = request.app.state.panel

    async def stream() -> AsyncIterator[str]:
        try:
            while True:
                version = panel.version
                yield f"data: {panel.snapshot()}\n\n"
                # Ends the stream the moment the page is closed, or the server starts to shut
                # down, even if nothing changes.
                with ct.scope():
                    await panel.wait_changed(version)
        except OperationCancelled:
            if ct.reason is not CancellationReason.SHUTDOWN:
                raise  # the page was closed: nobody to tell
        yield RESTART

    return StreamingResponse(stream(), media_type="text/event-stream")
