"""Per-request records for the apps of the real-server tests, and the long-poll that reads them.

Every test request carries an id, the last segment of its path. An app records, per id, what
happened to the request's token (a :class:`Record`, which the app extends with fields of its
own), and serves ``/await/{rid}/{what}``: a wait on the server side, bounded, until event
``what`` of request ``rid`` happened, answered with the record. Tests wait through it instead of
sleeping.

Records are touched on the event loop only (a worker thread goes through :func:`on_loop`), so
they need no lock; their events are made there too, as ``anyio.Event`` must be.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
from fastapi import FastAPI

from fastapi_abort import CancellationToken

#: The events every record has; an app's record may add more (its ``EVENTS``).
COMMON_EVENTS = ("started", "tripped", "finished", "logged")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


@dataclass
class Record:
    """What one request's token did.

    When the token trips, ``tripped_ns`` is the first thing set (``time.monotonic_ns()``, the
    moment a detection delay is measured to; CLOCK_MONOTONIC is one clock for the machine), then
    ``reason``. ``log_lines`` holds the request's quiet 499 line, once logged.
    """

    EVENTS: ClassVar[tuple[str, ...]] = COMMON_EVENTS

    events: dict[str, anyio.Event] = field(init=False, repr=False)
    reason: str | None = None
    tripped_ns: int | None = None
    log_lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = {name: anyio.Event() for name in self.EVENTS}

    def report(self) -> dict[str, Any]:
        """What ``/await`` answers: whether the token tripped and the code finished, and every
        field but the events."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "events"}
        tripped, finished = self.events["tripped"], self.events["finished"]
        return {"tripped": tripped.is_set(), "finished": finished.is_set(), **values}


R = TypeVar("R", bound=Record)

_stderr = logging.StreamHandler(sys.stderr)
_stderr.setFormatter(logging.Formatter(LOG_FORMAT))


class Recorder(Generic[R]):
    """The records of one app, by request id."""

    def __init__(self, make: Callable[[], R]) -> None:
        self._make = make
        self.records: dict[str, R] = {}

    def record(self, rid: str) -> R:
        """The record of ``rid``, made on first use (on the event loop)."""
        if rid not in self.records:
            self.records[rid] = self._make()
        return self.records[rid]

    def watch(self, rid: str, ct: CancellationToken) -> R:
        """The record of ``rid``, set to note when and why ``ct`` trips."""
        rec = self.record(rid)

        def tripped() -> None:
            rec.tripped_ns = time.monotonic_ns()
            rec.reason = str(ct.reason)
            rec.events["tripped"].set()

        ct.register(tripped)
        return rec

    def serve_await(self, app: FastAPI) -> None:
        """Add ``/await/{rid}/{what}`` to ``app``: the record once ``what`` happened, or after
        ``timeout`` seconds, with ``happened`` saying which."""

        @app.get("/await/{rid}/{what}")
        async def await_event(rid: str, what: str, timeout: float = 10.0) -> dict[str, Any]:
            rec = self.record(rid)
            with anyio.move_on_after(timeout):
                await rec.events[what].wait()
            return {"happened": rec.events[what].is_set(), **rec.report()}

    def install_logging(self) -> None:
        """Log to stderr (WARNING and up, the library's INFO lines too), and keep each request's
        quiet line in its record, setting its ``logged`` event.

        The stderr handler is added once per process, whatever number of apps a process imports.
        """
        root = logging.getLogger()
        if _stderr not in root.handlers:
            root.addHandler(_stderr)
            root.setLevel(logging.WARNING)
        abort_logger = logging.getLogger("fastapi_abort")
        abort_logger.setLevel(logging.INFO)
        abort_logger.addHandler(_KeepQuietLine(self))


class _KeepQuietLine(logging.Handler):
    """Keeps the quiet line of the request whose path ends with the id, and sets ``logged``."""

    def __init__(self, recorder: Recorder[Any]) -> None:
        super().__init__()
        self.recorder = recorder

    def emit(self, log: logging.LogRecord) -> None:
        rid = str(getattr(log, "http_path", "")).rstrip("/").rsplit("/", 1)[-1]
        rec = self.recorder.records.get(rid)
        if rec is not None:
            rec.log_lines.append(log.getMessage())
            rec.events["logged"].set()


def on_loop(fn: Callable[..., object], *args: object) -> None:
    """Call ``fn(*args)`` on the event loop, from a worker thread or from the loop's own thread.

    ``def`` code runs in a worker thread, except the ``finally`` of a ``def`` generator that
    Starlette stopped between two chunks: Starlette never resumes it, and Python closes it when
    it is collected, on the event loop's thread, where ``anyio.from_thread`` has no loop to call.
    """
    try:
        anyio.lowlevel.current_token()
    except RuntimeError:  # no event loop in this thread: a worker thread
        anyio.from_thread.run_sync(fn, *args)
    else:
        fn(*args)


@contextmanager
def running(rec: Record) -> Iterator[None]:
    """Sets ``started`` on entry and ``finished`` however the block ends."""
    rec.events["started"].set()
    try:
        yield
    finally:
        rec.events["finished"].set()


async def sse(rec: Record, ct: CancellationToken) -> AsyncIterator[bytes]:
    """Events ``data: 0``, ``data: 1``... every 0.05 s, for 30 s at most; the token is checked
    before each. ``started`` is set once the first is sent, ``finished`` however it ends."""
    try:
        for i in range(600):
            ct.throw_if_cancellation_requested()
            yield f"data: {i}\n\n".encode()
            rec.events["started"].set()
            await anyio.sleep(0.05)
    finally:
        rec.events["finished"].set()
