"""The app for real-server tests of deadlines, preemptive mode, the hook and WebSockets.

It shares the per-request records, the log handlers and ``/await/{rid}/{what}`` of
``tests.server_app`` (whose own app is not served here).
"""

from __future__ import annotations

import anyio
from fastapi import Depends, FastAPI, WebSocket

from fastapi_abort import AbortedRequest, RequestAborted, deadline, install, preemptive
from tests.server_app import _watch, await_event

hooked: dict[str, AbortedRequest] = {}


def on_abort(aborted: AbortedRequest) -> None:
    # Called right after the log line that sets the request's "logged" event, in the same
    # step of the event loop: a test that waited for "logged" finds it here.
    hooked[aborted.path.rsplit("/", 1)[-1]] = aborted


app = FastAPI()
install(app, deadline=30, on_abort=on_abort)
app.get("/await/{rid}/{what}")(await_event)


@app.get("/hooked/{rid}")
async def hooked_for(rid: str) -> dict[str, object]:
    aborted = hooked.get(rid)
    if aborted is None:
        return {}
    return {
        "method": aborted.method,
        "path": aborted.path,
        "status_code": aborted.status_code,
        "elapsed": aborted.elapsed,
        "reason": str(aborted.reason),
    }


@app.get("/deadline/{rid}", dependencies=[Depends(deadline(0.2))])
async def past_its_deadline(rid: str, ct: RequestAborted) -> None:
    rec = _watch(rid, ct)
    rec.events["started"].set()
    try:
        await ct.sleep(30)
    finally:
        rec.events["finished"].set()


@app.get("/preempt/{rid}", dependencies=[Depends(preemptive)])
async def preempted(rid: str, ct: RequestAborted) -> None:
    rec = _watch(rid, ct)
    rec.events["started"].set()
    try:
        await anyio.sleep(30)  # checks no token: preemptive mode cancels it
    finally:
        rec.events["finished"].set()


@app.websocket("/ws/{rid}")
async def ticks(websocket: WebSocket, rid: str, ct: RequestAborted) -> None:
    rec = _watch(rid, ct)
    await websocket.accept()
    rec.events["started"].set()
    try:
        # Pushes without reading: only the middleware's watcher hears the peer leave. A send
        # that races the leaving raises, and that ends quietly too.
        while True:
            await websocket.send_text("tick")
            await ct.sleep(0.02)
    finally:
        rec.events["finished"].set()
