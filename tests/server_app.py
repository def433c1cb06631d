"""The app the real-server tests run under uvicorn and hypercorn.

Every test request carries an id. The app records, per id, what happened to the request's token,
and exposes ``/await/{rid}/{what}`` so that tests wait for an event on the server side (bounded)
instead of sleeping (:mod:`tests.recording`). Its record adds the ids of the tokens a request
saw, the steps a ``def`` endpoint took after its token tripped, the token's state after the
response, and the size of an uploaded body.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import anyio.from_thread
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from fastapi_abort import CancellationToken, RequestAborted, install
from tests import recording
from tests.recording import Recorder, on_loop, running, sse


@dataclass
class Record(recording.Record):
    EVENTS = (*recording.COMMON_EVENTS, "final")

    tokens: list[int] = field(default_factory=list)
    steps_after_trip: int = 0
    can_be_cancelled_after_response: bool | None = None
    body_size: int = 0

    def report(self) -> dict[str, Any]:
        report = super().report()
        report["token_ids"] = sorted(set(report.pop("tokens")))
        return report


recorder = Recorder(Record)
recorder.install_logging()

app = FastAPI()
install(app)
recorder.serve_await(app)


def _watch(rid: str, ct: CancellationToken) -> Record:
    rec = recorder.watch(rid, ct)
    rec.tokens.append(id(ct))
    return rec


@app.get("/hold/{rid}")
async def hold(rid: str, ct: RequestAborted) -> dict[str, str]:
    with running(_watch(rid, ct)):
        await ct.sleep(30)
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
    with running(_watch(rid, ct)):
        await ct.sleep(30)
    return rid


@app.get("/dependency/{rid}")
async def held_in_dependency(rid: Annotated[str, Depends(_held_dependency)]) -> dict[str, str]:
    return {"rid": rid}


@app.get("/stream/{rid}")
async def stream(rid: str, ct: RequestAborted) -> StreamingResponse:
    return StreamingResponse(sse(_watch(rid, ct), ct), media_type="text/event-stream")


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
            on_loop(rec.events["finished"].set)  # on the loop, when Starlette stopped it

    return StreamingResponse(chunks(), media_type="text/event-stream")


@app.post("/upload/{rid}")
async def upload(rid: str, request: Request, ct: RequestAborted) -> dict[str, Any]:
    rec = _watch(rid, ct)
    rec.body_size = len(await request.body())
    with running(rec):
        await ct.sleep(30)
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
