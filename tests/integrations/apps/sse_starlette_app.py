"""sse-starlette's ``EventSourceResponse``, with and without fastapi-abort (:mod:`.twins`).

* ``/events/{rid}?n=N``: N events from an async generator that waits on the token between
  them, 0.2 s apart, with sse-starlette's ping every 0.05 s;
* ``/events-sync/{rid}?n=N``: the same from a ``def`` generator (``sleep_blocking``);
* ``/polling/{rid}?n=N``: sse-starlette's README pattern, a generator that polls
  ``await request.is_disconnected()`` and takes no token; the route takes it all the same, so
  with the plugin its trips are recorded;
* ``/before/{rid}``: an endpoint that waits on the token before it returns the response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.from_thread
from fastapi import Depends, FastAPI, Request
from sse_starlette import EventSourceResponse

from fastapi_abort import CancellationToken, install
from tests.integrations.apps.twins import Record, ending, ending_in_thread, token_dependency
from tests.recording import Recorder

#: sse-starlette's ping interval here, and the pause between two events.
PING = 0.05
PAUSE = 0.2

recorder = Recorder(Record)
recorder.install_logging()


def build(plugin: bool) -> FastAPI:
    app = FastAPI()
    if plugin:
        install(app)
    recorder.serve_await(app)
    token = Depends(token_dependency(plugin))

    @app.get("/events/{rid}")
    async def events(rid: str, n: int = 600, ct: CancellationToken = token) -> EventSourceResponse:
        rec = recorder.watch(rid, ct)

        async def stream() -> AsyncIterator[dict[str, str]]:
            with ending(rec):
                for i in range(n):
                    yield {"event": "tick", "data": str(i)}
                    rec.items += 1
                    await ct.sleep(PAUSE)

        return EventSourceResponse(stream(), ping=PING)

    @app.get("/events-sync/{rid}")
    async def events_sync(
        rid: str, n: int = 600, ct: CancellationToken = token
    ) -> EventSourceResponse:
        rec = recorder.watch(rid, ct)

        def stream() -> Iterator[dict[str, str]]:
            with ending_in_thread(rec):
                for i in range(n):
                    yield {"event": "tick", "data": str(i)}
                    ct.sleep_blocking(PAUSE)

        return EventSourceResponse(stream(), ping=PING)

    @app.get("/polling/{rid}")
    async def polling(
        rid: str, request: Request, n: int = 600, ct: CancellationToken = token
    ) -> EventSourceResponse:
        rec = recorder.watch(rid, ct)

        async def stream() -> AsyncIterator[dict[str, str]]:
            with ending(rec):
                for i in range(n):
                    if await request.is_disconnected():
                        break
                    yield {"event": "tick", "data": str(i)}
                    rec.items += 1
                    await anyio.sleep(PAUSE / 10)

        return EventSourceResponse(stream(), ping=PING)

    @app.get("/polling-only/{rid}")
    async def polling_only(rid: str, request: Request, n: int = 600) -> EventSourceResponse:
        rec = recorder.record(rid)

        async def stream() -> AsyncIterator[dict[str, str]]:
            with ending(rec):
                for i in range(n):
                    if await request.is_disconnected():
                        break
                    yield {"event": "tick", "data": str(i)}
                    rec.items += 1
                    await anyio.sleep(PAUSE / 10)

        return EventSourceResponse(stream(), ping=PING)

    @app.get("/before/{rid}")
    async def before(rid: str, ct: CancellationToken = token) -> EventSourceResponse:
        rec = recorder.watch(rid, ct)
        with ending(rec):
            await ct.sleep(30)

        async def stream() -> AsyncIterator[str]:
            yield "late"

        return EventSourceResponse(stream())

    return app


app = build(plugin=True)
plain = build(plugin=False)
