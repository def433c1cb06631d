"""FastAPI's own streaming, with and without fastapi-abort (:mod:`.twins`): endpoints that
``yield`` (FastAPI 0.134 and later). Each sends N items (600 by default), waiting 0.05 s on the
token after each.

* ``/sse/{rid}``: ``response_class=EventSourceResponse`` (``fastapi.sse``), an async generator
  of ``ServerSentEvent``;
* ``/sse-sync/{rid}``: the same from a ``def`` generator (``ct.sleep_blocking``);
* ``/jsonl/{rid}``: no response class: JSON Lines, of a declared item type;
* ``/raw/{rid}``: ``response_class=StreamingResponse``, bytes as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel

from fastapi_abort import CancellationToken, install
from tests.integrations.apps.twins import Record, ending, ending_in_thread, token_dependency
from tests.recording import Recorder

PAUSE = 0.05
recorder = Recorder(Record)
recorder.install_logging()


class Tick(BaseModel):
    rid: str
    n: int


def build(plugin: bool) -> FastAPI:
    app = FastAPI()
    if plugin:
        install(app)
    recorder.serve_await(app)
    token = Depends(token_dependency(plugin))

    @app.get("/sse/{rid}", response_class=EventSourceResponse)
    async def sse(
        rid: str, n: int = 600, ct: CancellationToken = token
    ) -> AsyncIterator[ServerSentEvent]:
        rec = recorder.watch(rid, ct)
        with ending(rec):
            for i in range(n):
                yield ServerSentEvent(data={"n": i}, event="tick", id=str(i))
                rec.items += 1
                await ct.sleep(PAUSE)

    @app.get("/sse-sync/{rid}", response_class=EventSourceResponse)
    def sse_sync(rid: str, n: int = 600, ct: CancellationToken = token) -> Iterator[Tick]:
        import anyio.from_thread

        rec = anyio.from_thread.run_sync(recorder.watch, rid, ct)
        with ending_in_thread(rec):
            for i in range(n):
                yield Tick(rid=rid, n=i)
                ct.sleep_blocking(PAUSE)

    @app.get("/jsonl/{rid}")
    async def jsonl(rid: str, n: int = 600, ct: CancellationToken = token) -> AsyncIterator[Tick]:
        rec = recorder.watch(rid, ct)
        with ending(rec):
            for i in range(n):
                yield Tick(rid=rid, n=i)
                rec.items += 1
                await ct.sleep(PAUSE)

    @app.get("/raw/{rid}", response_class=StreamingResponse)
    async def raw(rid: str, n: int = 600, ct: CancellationToken = token) -> AsyncIterator[bytes]:
        rec = recorder.watch(rid, ct)
        with ending(rec):
            for i in range(n):
                yield b"chunk %d\n" % i
                rec.items += 1
                await ct.sleep(PAUSE)

    return app


app = build(plugin=True)
plain = build(plugin=False)
