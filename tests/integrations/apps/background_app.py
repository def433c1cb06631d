"""Background work with and without fastapi-abort (:mod:`.twins`). Each task sets its request's
``background`` event when it runs.

* ``/queue/{rid}``: a ``BackgroundTasks`` task, and a plain answer;
* ``/queue-then-wait/{rid}``: a task queued, then a wait on the token (30 s);
* ``/queue-then-raise/{rid}``: a task queued, then an ``HTTPException``;
* ``/stream/{rid}?n=N``: ``StreamingResponse(..., background=BackgroundTask(...))`` over a
  generator that sends a chunk, then waits 0.05 s on the token, N times;
* ``/stream-sync/{rid}?n=N``: the same over a ``def`` generator (``sleep_blocking``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from fastapi_abort import CancellationToken, install
from tests.integrations.apps.twins import Record, ending, ending_in_thread, token_dependency
from tests.recording import Recorder

recorder = Recorder(Record)
recorder.install_logging()


def ran(rid: str) -> None:
    """The background task: on the event loop (a ``def`` task would run in a worker thread)."""
    recorder.record(rid).events["background"].set()


async def ran_async(rid: str) -> None:
    ran(rid)


def build(plugin: bool) -> FastAPI:
    app = FastAPI()
    if plugin:
        install(app)
    recorder.serve_await(app)
    token = Depends(token_dependency(plugin))

    @app.get("/queue/{rid}")
    async def queue(rid: str, background: BackgroundTasks) -> dict[str, str]:
        background.add_task(ran_async, rid)
        return {"rid": rid}

    @app.get("/queue-then-wait/{rid}")
    async def queue_then_wait(
        rid: str, background: BackgroundTasks, ct: CancellationToken = token
    ) -> dict[str, str]:
        background.add_task(ran_async, rid)
        with ending(recorder.watch(rid, ct)):
            await ct.sleep(30)
        return {"rid": rid}

    @app.get("/queue-then-raise/{rid}")
    async def queue_then_raise(rid: str, background: BackgroundTasks) -> None:
        background.add_task(ran_async, rid)
        raise HTTPException(409, "taken")

    @app.get("/stream/{rid}")
    async def stream(rid: str, n: int = 600, ct: CancellationToken = token) -> StreamingResponse:
        rec = recorder.watch(rid, ct)

        async def chunks() -> AsyncIterator[bytes]:
            with ending(rec):
                for i in range(n):
                    yield b"chunk %d\n" % i
                    await ct.sleep(0.05)

        return StreamingResponse(chunks(), background=BackgroundTask(ran_async, rid))

    @app.get("/stream-sync/{rid}")
    async def stream_sync(
        rid: str, n: int = 600, ct: CancellationToken = token
    ) -> StreamingResponse:
        rec = recorder.watch(rid, ct)

        def chunks() -> Iterator[bytes]:
            with ending_in_thread(rec):
                for i in range(n):
                    yield b"chunk %d\n" % i
                    ct.sleep_blocking(0.05)

        return StreamingResponse(chunks(), background=BackgroundTask(ran_async, rid))

    return app


app = build(plugin=True)
plain = build(plugin=False)
