"""The live panel: the last requests and how each ended, pushed to the index page as it happens.

A pure ASGI middleware wraps the whole app and records each request: running, then completed
(with its status) or cancelled (after how long). It learns of a cancellation from the one quiet
line fastapi-abort logs for it, whose record carries ``elapsed`` as an attribute. The page reads
``/panel/events``, a server-sent-events stream that sends the whole (short) list on every change.

Memory is bounded: the panel keeps the last ``SIZE`` requests, and subscribers share one event
that is set on every change, so there is no queue per subscriber to grow.
"""

from __future__ import annotations

import json
import logging
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

from fastapi_abort import RequestAborted

SIZE = 20  # requests shown
NOT_SHOWN = frozenset({"/panel/events", "/favicon.ico"})


@dataclass
class Entry:
    id: int
    method: str
    path: str
    outcome: str = "running"  # then "completed", "cancelled" or "failed"
    status: int | None = None
    elapsed: float | None = None


class Panel:
    """The last ``size`` requests. Used on the event loop thread only."""

    def __init__(self, size: int = SIZE) -> None:
        self.entries: deque[Entry] = deque(maxlen=size)
        self._ids = count(1)
        self._changed: anyio.Event | None = None

    def start(self, method: str, path: str) -> Entry:
        entry = Entry(next(self._ids), method, path)
        self.entries.append(entry)
        self.changed()
        return entry

    def changed(self) -> None:
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    async def wait_changed(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def snapshot(self) -> str:
        return json.dumps([asdict(entry) for entry in reversed(self.entries)])


# The entry of the request being served, for the log handler below.
current: ContextVar[Entry | None] = ContextVar("current", default=None)


class Recorder:
    """Pure ASGI middleware: one panel entry per HTTP request. Wrap the app that install() set up,
    so that the quiet line fastapi-abort logs at the end of a request is seen here."""

    def __init__(self, app: ASGIApp, panel: Panel) -> None:
        self.app = app
        self.panel = panel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NOT_SHOWN:
            await self.app(scope, receive, send)
            return
        entry = self.panel.start(scope["method"], scope["path"])
        started = time.perf_counter()

        async def record_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        reset = current.set(entry)
        try:
            await self.app(scope, receive, record_status)
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


class CancelledRequests(logging.Handler):
    """Marks the current entry cancelled when fastapi-abort logs its quiet line for it."""

    def emit(self, record: logging.LogRecord) -> None:
        entry = current.get()
        elapsed = getattr(record, "elapsed", None)
        if entry is not None and isinstance(elapsed, float):
            entry.outcome = "cancelled"
            entry.status = getattr(record, "status_code", entry.status)
            entry.elapsed = elapsed


router = APIRouter(tags=["panel"])


@router.get("/panel/events", response_class=StreamingResponse)
async def events(request: Request, ct: RequestAborted) -> StreamingResponse:
    panel: Panel = request.app.state.panel

    async def stream() -> AsyncIterator[str]:
        while True:
            yield f"data: {panel.snapshot()}\n\n"
            # Ends the stream the moment the page is closed, even if nothing changes.
            with ct.scope():
                await panel.wait_changed()

    return StreamingResponse(stream(), media_type="text/event-stream")
