"""The app the real-server tests run under uvicorn and hypercorn.

Every test request carries an id. The app records, per id, what happened to the request's token,
and exposes ``/await/{rid}/{what}`` so that tests wait for an event on the server side (bounded)
instead of sleeping.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import anyio.from_thread
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from fastapi_abort import CancellationToken, RequestAborted, install

EVENTS = ("started", "tripped", "finished", "logged", "final")


@dataclass
class Record:
    events: dict[str, anyio.Event] = field(
        default_factory=lambda: {name: anyio.Event() for name in EVENTS}
    )
    reason: str | None = None
    tokens: list[int] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    steps_after_trip: int = 0
    can_be_cancelled_after_response: bool | None = None
    body_size: int = 0


records: dict[str, Record] = {}


def record(rid: str) -> Record:
    # Runs on the event loop only (anyio.Event must be created there).
    if rid not in records:
        records[rid] = Record()
    return records[rid]


class _RecordAborted(logging.Handler):
    """Sets the ``logged`` event of the request whose path carries the id."""

    def emit(self, log: logging.LogRecord) -> None:
        path = str(getattr(log, "http_path", ""))
        rid = path.rstrip("/").rsplit("/", 1)[-1]
        rec = records.get(rid)
        if rec is not None:
            rec.log_lines.append(log.getMessage())
            rec.events["logged"].set()


_stderr = logging.StreamHandler(sys.stderr)
_stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
logging.getLogger().addHandler(_stderr)
logging.getLogger().setLevel(logging.WARNING)
_abort_logger = logging.getLogger("fastapi_abort")
_abort_logger.setLevel(logging.INFO)
_abort_logger.addHandler(_RecordAborted())

app = FastAPI()
install(app)


def _watch(rid: str, ct: CancellationToken) -> Record:
    rec = record(rid)
    rec.tokens.append(id(ct))

    def tripped() -> None:
        rec.reason = str(ct.reason)
        rec.events["tripped"].set()

    ct.register(tripped)
    return rec


@app.get("/hold/{rid}")
async def hold(rid: str, ct: RequestAborted) -> dict[str, str]:
    rec = _watch(rid, ct)
    rec.events["started"].set()
    try:
        await ct.sleep(30)
    finally:
        rec.events["finished"].set()
    return {"rid": rid}


@app.get("/hold-sync/{rid}")
def hold_sync(rid: str, ct: RequestAborted) -> dict[str, str]:
    rec = anyio.from_thread.run_sync(_watch, rid, ct)
    anyio.from_thread.run_sync(rec.events["started"].set)
    try:
        for _ in range(600):
            if ct.is_cancellation_requested:
                rec.steps_after_trip += 1
            ct.throw_if_cancellation_requested()
            ct.wait_blocking(0.05)
    finally:
        anyio.from_thread.run_sync(rec.events["finished"].set)
    return {"rid": rid}


async def _held_dependency(rid: str, ct: RequestAborted) -> str:
    rec = _watch(rid, ct)
    rec.events["started"].set()
    try:
        await ct.sleep(30)
    finally:
        rec.events["finished"].set()
    return rid


@app.get("/dependency/{rid}")
async def held_in_dependency(rid: Annotated[str, Depends(_held_dependency)]) -> dict[str, str]:
    return {"rid": rid}


@app.get("/stream/{rid}")
async def stream(rid: str, ct: RequestAborted) -> StreamingResponse:
    rec = _watch(rid, ct)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for i in range(600):
                ct.throw_if_cancellation_requested()
                yield f"data: {i}\n\n".encode()
                rec.events["started"].set()
                await anyio.sleep(0.05)
        finally:
            rec.events["finished"].set()

    return StreamingResponse(chunks(), media_type="text/event-stream")


@app.get("/stream-sync/{rid}")
def stream_sync(rid: str, ct: RequestAborted) -> StreamingResponse:
    rec = anyio.from_thread.run_sync(_watch, rid, ct)

    def chunks() -> Iterator[bytes]:
        try:
            for i in range(600):
                ct.throw_if_cancellation_requested()
                yield f"data: {i}\n\n".encode()
                anyio.from_thread.run_sync(rec.events["started"].set)
                ct.wait_blocking(0.05)
        finally:
            anyio.from_thread.run_sync(rec.events["finished"].set)

    return StreamingResponse(chunks(), media_type="text/event-stream")


@app.post("/upload/{rid}")
async def upload(rid: str, request: Request, ct: RequestAborted) -> dict[str, Any]:
    rec = _watch(rid, ct)
    rec.body_size = len(await request.body())
    rec.events["started"].set()
    try:
        await ct.sleep(30)
    finally:
        rec.events["finished"].set()
    return {"rid": rid}


@app.get("/quick/{rid}")
async def quick(rid: str, ct: RequestAborted, tasks: BackgroundTasks) -> dict[str, str]:
    rec = _watch(rid, ct)

    def after_response() -> None:
        # Background tasks run after the response is complete: the token must be final.
        rec.can_be_cancelled_after_response = ct.can_be_cancelled
        rec.events["final"].set()

    tasks.add_task(after_response)
    return {"rid": rid}


@app.get("/await/{rid}/{what}")
async def await_event(rid: str, what: str, timeout: float = 10.0) -> dict[str, Any]:
    rec = record(rid)
    with anyio.move_on_after(timeout):
        await rec.events[what].wait()
    return {
        "happened": rec.events[what].is_set(),
        "reason": rec.reason,
        "tripped": rec.events["tripped"].is_set(),
        "finished": rec.events["finished"].is_set(),
        "token_ids": sorted(set(rec.tokens)),
        "log_lines": rec.log_lines,
        "steps_after_trip": rec.steps_after_trip,
        "can_be_cancelled_after_response": rec.can_be_cancelled_after_response,
        "body_size": rec.body_size,
    }
