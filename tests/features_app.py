"""The app for real-server tests of deadlines, preemptive mode, the hook and WebSockets.

It records per request id what the request's token did, and serves ``/await/{rid}/{what}``
(:mod:`tests.recording`); ``/hooked/{rid}`` says what ``on_abort`` was given.
"""

from __future__ import annotations

import anyio
from fastapi import Depends, FastAPI, WebSocket

from fastapi_abort import AbortedRequest, RequestAborted, deadline, install, preemptive
from tests.recording import Record, Recorder, running

recorder = Recorder(Record)
recorder.install_logging()
hooked: dict[str, AbortedRequest] = {}


def on_abort(aborted: AbortedRequest) -> None:
    # Called right after the log line that sets the request's "logged" event, in the same
    # step of the event loop: a test that waited for "logged" finds it here.
    hooked[aborted.path.rsplit("/", 1)[-1]] = aborted


app = FastAPI()
install(app, deadline=30, on_abort=on_abort)
recorder.serve_await(app)


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
    with running(recorder.watch(rid, ct)):
        await ct.sleep(30)


@app.get("/preempt/{rid}", dependencies=[Depends(preemptive)])
async def preempted(rid: str, ct: RequestAborted) -> None:
    with running(recorder.watch(rid, ct)):
        await anyio.sleep(30)  # checks no token: preemptive mode cancels it


@app.websocket("/ws/{rid}")
async def ticks(websocket: WebSocket, rid: str, ct: RequestAborted) -> None:
    rec = recorder.watch(rid, ct)
    await websocket.accept()
    with running(rec):
        # Pushes without reading: only the middleware's watcher hears the peer leave. A send
        # that races the leaving raises, and that ends quietly too.
        while True:
            await websocket.send_text("tick")
            await ct.sleep(0.02)
