"""The app for the abort record's real-server tests.

``/started/{rid}`` and ``/hooked/{rid}`` long-poll, for the test, the moment a request's
endpoint runs and what ``on_abort`` was given for it (as JSON).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fastapi_abort import AbortedRequest, RequestAborted, install

#: What each stream sends: ``CHUNKS`` body messages of ``SIZE`` bytes, the last ending in LAST.
CHUNKS = 3
SIZE = 1000
LAST = b"Z"
#: How long the app waits for a test's long-poll before it answers 404.
WAIT = 10

started: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)
arrived: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)
hooked: dict[str, AbortedRequest] = {}


def on_abort(aborted: AbortedRequest) -> None:
    rid = aborted.path.rsplit("/", 1)[-1]
    hooked[rid] = aborted
    arrived[rid].set()


app = FastAPI()
install(app, on_abort=on_abort)


def chunk(index: int) -> bytes:
    return b"a" * (SIZE - 1) + (LAST if index == CHUNKS - 1 else b"a")


@app.get("/started/{rid}")
async def started_of(rid: str) -> bool:
    with anyio.fail_after(WAIT):
        await started[rid].wait()
    del started[rid]
    return True


@app.get("/hooked/{rid}")
async def hooked_of(rid: str) -> dict[str, object]:
    with anyio.fail_after(WAIT):
        await arrived[rid].wait()
    del arrived[rid]
    record = dataclasses.asdict(hooked.pop(rid))
    return {**record, "reason": str(record["reason"])}


@app.get("/before/{rid}")
async def leaves_before_the_response(rid: str, ct: RequestAborted) -> None:
    started[rid].set()
    await ct.sleep(30)


@app.get("/stream/{rid}")
async def leaves_after_the_last_chunk(rid: str, ct: RequestAborted) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for index in range(CHUNKS):
            yield chunk(index)
        await ct.sleep(30)

    return StreamingResponse(body(), media_type="text/plain")


@app.get("/plain/{rid}")
async def streams_without_its_token(rid: str) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        index = 0
        while True:
            yield chunk(index % CHUNKS)
            index += 1
            await anyio.sleep(0.02)  # an endless stream's pace, not a wait for anything

    return StreamingResponse(body(), media_type="text/plain")
