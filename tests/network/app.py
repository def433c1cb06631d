"""The app of the vanished-network tests: an idle long request and a stream that keeps writing.

Each request reports ``started`` and, from its token's callback, ``tripped`` (with the token's
reason) as events (:mod:`tests.events`) to the socket named by ``ABORT_NETWORK_EVENTS``: a UNIX
socket is reached by its path from any network namespace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fastapi_abort import CancellationToken, RequestAborted, install
from tests.events import Emitter

EVENTS_ENV = "ABORT_NETWORK_EVENTS"
#: Longer than any test waits: the request ends only because its token tripped.
LONG = 600.0
#: One stream chunk: enough that unacknowledged data piles up at once after the cut.
CHUNK = b"data: " + b"x" * 4096 + b"\n\n"
#: Seconds between chunks: the stream keeps writing, as an SSE ticker does.
TICK = 0.05

emit = Emitter(EVENTS_ENV)
app = FastAPI()
install(app)


def watch(rid: str, ct: CancellationToken) -> None:
    ct.register(lambda: emit(rid, "tripped", reason=str(ct.reason)))
    emit(rid, "started")


@app.get("/idle/{rid}")
async def idle(rid: str, ct: RequestAborted) -> None:
    watch(rid, ct)
    await ct.sleep(LONG)


@app.get("/stream/{rid}")
async def stream(rid: str, ct: RequestAborted) -> StreamingResponse:
    watch(rid, ct)

    async def ticks() -> AsyncIterator[bytes]:
        while True:
            yield CHUNK
            await ct.sleep(TICK)

    return StreamingResponse(ticks(), media_type="text/event-stream")
