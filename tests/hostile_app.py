"""The app the hostile-input tests run under real servers (``tests.servers.test_hostile``).

Every request carries an id; the app records per id what its token did and what the endpoint
saw, and serves ``/await/{rid}/{what}`` (:mod:`tests.recording`).

* ``POST /stream/{rid}`` reads its body as a stream (``async for chunk in request.stream()``),
  counting bytes; ``started`` is set at the first chunk.
* ``POST /unread/{rid}`` never reads its body: it waits for its token (30 s at most).
* ``/misuse/{case}/{rid}`` is a raw ASGI app that breaks the protocol the way ``case`` says, and
  records the error ``send`` or ``receive`` raised at it, if any.
* ``/ws`` echoes one WebSocket text message.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from fastapi import FastAPI, Request, WebSocket
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import RequestAborted, install
from tests.recording import Record, Recorder, running


@dataclass
class Seen(Record):
    body_size: int = 0
    #: What the endpoint caught: an exception's type and message.
    error: str | None = None
    #: For the misuse cases: the messages ``receive`` returned.
    received: tuple[str, ...] = ()


recorder = Recorder(Seen)
recorder.install_logging()

app = FastAPI()
install(app)
recorder.serve_await(app)


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.post("/stream/{rid}")
async def stream(rid: str, request: Request, ct: RequestAborted) -> dict[str, int]:
    rec = recorder.watch(rid, ct)
    try:
        async for chunk in request.stream():
            rec.body_size += len(chunk)
            if chunk:
                rec.events["started"].set()
    except ClientDisconnect as exc:
        # What Starlette raises when the client leaves mid-body: recorded, then raised on as an
        # app would.
        rec.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        rec.events["finished"].set()
    return {"size": rec.body_size}


@app.post("/unread/{rid}")
async def unread(rid: str, ct: RequestAborted) -> dict[str, bool]:
    with running(recorder.watch(rid, ct)), anyio.move_on_after(30):
        await ct.wait()
    return {"tripped": ct.is_cancellation_requested}


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


START: Message = {"type": "http.response.start", "status": 200, "headers": []}
BODY: Message = {"type": "http.response.body", "body": b"ok", "more_body": False}


async def misuse(scope: Scope, receive: Receive, send: Send) -> None:
    """Breaks the ASGI protocol as the path says; records what it was told."""
    case, rid = scope["path"].rstrip("/").rsplit("/", 2)[-2:]
    rec = recorder.record(rid)
    received: list[str] = []
    try:
        with running(rec):
            if case == "body-before-start":
                await send(BODY)
            elif case == "second-start":
                await send(START)
                await send(START)
                await send(BODY)
            elif case == "receive-after-response":
                await send(START)
                await send(BODY)
                received.append((await receive())["type"])
                received.append((await receive())["type"])
            elif case == "send-after-disconnect":
                while (await receive())["type"] != "http.disconnect":
                    pass
                received.append("http.disconnect")
                await send(START)
                await send(BODY)
    except Exception as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    finally:
        rec.received = tuple(received)


app.mount("/misuse", misuse)
