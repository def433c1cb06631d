"""The app of the chaos run: every request is recorded by id, and the run reads the records back.

Two layers of recording around the app that ``install()`` builds:

- ``Finaliser`` wraps it from outside (outside ``RequestAbortedMiddleware``, which it never
  touches: it passes ``receive`` and ``send`` through). It creates the record when the server
  hands the request over, and fills in the token's final state once everything inside has
  returned, the 499 line included: by then the token is final, tripped or not.
- ``Recorder`` is an ordinary middleware inside. It asks for the request's token first thing
  (every request is watched), registers a callback that counts trips, and stamps the moment the
  app calls the final ``send`` of the response, which is where the library marks the response
  complete. One counter orders those stamps, so the run can tell whether a trip came before or
  after completion.

Control endpoints live under ``/_ctl``: they are not recorded, and they never abort.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_abort import (
    CancellationToken,
    CancellationTokenSource,
    RequestAborted,
    get_request_aborted,
    install,
)
from fastapi_abort._state import SCOPE_KEY, RequestState
from tests.chaos.client import BIG_BODY

#: How long a request that waits for its client to leave waits at most. A missed trip shows up
#: as a request still running when the run ends, long before this.
HOLD_SECONDS = 300.0
#: Pool threads carry these names (anyio on asyncio, trio's thread cache); other threads are
#: the server's own.
POOL_THREAD_PREFIXES = ("AnyIO worker thread", "Trio thread")
RECORD_KEY = "chaos.record"

_sequence = itertools.count(1)


class Record:
    """What the server saw of one request."""

    __slots__ = (
        "completed",
        "final_send_seq",
        "reason",
        "rid",
        "same_token",
        "started",
        "token",
        "trip_seq",
        "tripped",
        "trips",
    )

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.token: CancellationToken | None = None
        #: Times the trip callback ran (exactly once for a tripped token).
        self.trips = 0
        self.trip_seq = 0
        #: When the app called the response's final send (0: never).
        self.final_send_seq = 0
        #: The endpoint reached its long part (read the body, started waiting).
        self.started = False
        #: The endpoint's token is the recorder's token.
        self.same_token = True
        #: Final state, read after the app and the middleware returned.
        self.tripped: bool | None = None
        self.completed: bool | None = None
        self.reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if name != "token"}


@dataclass
class Live:
    records: dict[str, Record]
    finished: list[Record]
    waiters: dict[str, anyio.Event]
    in_flight: int = 0
    idle: anyio.Event | None = None


live = Live(records={}, finished=[], waiters={})


class Finaliser:
    """Outermost wrapper: creates each record, and reads the token's final state at the end.

    Records the requests whose path starts with ``prefix`` (their id is the last segment).
    """

    def __init__(self, app: ASGIApp, prefix: str = "/c/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        rid = path.rsplit("/", 1)[-1] if path.startswith(self.prefix) else None
        if rid is None:
            await self.app(scope, receive, send)
            return
        record = Record(rid)
        live.records[rid] = record
        live.in_flight += 1
        scope[RECORD_KEY] = record
        try:
            await self.app(scope, receive, send)
        finally:
            token, record.token = record.token, None
            if token is not None:
                record.tripped = token.is_cancellation_requested
                record.completed = not token.can_be_cancelled
                record.reason = None if token.reason is None else str(token.reason)
            del live.records[rid]
            live.finished.append(record)
            live.in_flight -= 1
            if live.in_flight == 0 and live.idle is not None:
                live.idle.set()
                live.idle = None


class Recorder:
    """Inside the library's middleware: takes the token at once and stamps trip and completion."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record: Record | None = scope.get(RECORD_KEY)
        if record is None:
            await self.app(scope, receive, send)
            return
        token = get_request_aborted(HTTPConnection(scope))
        record.token = token

        def tripped() -> None:
            record.trips += 1
            if not record.trip_seq:
                record.trip_seq = next(_sequence)

        async def stamped_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # The token reads as cancelled from its trip on; its callbacks may run a moment
                # later, when an app waiting in receive() mid-response heard the disconnect
                # first (docs/how-it-works.md, "The watcher").
                if token.is_cancellation_requested and not record.trip_seq:
                    record.trip_seq = next(_sequence)
                record.final_send_seq = next(_sequence)
            await send(message)

        with token.register(tripped):
            await self.app(scope, receive, stamped_send)


def _record(request: Request, token: CancellationToken) -> Record:
    record: Record = request.scope[RECORD_KEY]
    if record.token is not token:
        record.same_token = False
    return record


def mark_started(record: Record) -> None:
    """The endpoint of ``record`` reached its long part: answer the long-poll waiting for it."""
    record.started = True
    waiter = live.waiters.get(record.rid)
    if waiter is not None:
        waiter.set()


async def _record_dependency(request: Request, ct: RequestAborted) -> Record:
    return _record(request, ct)


Recorded = Annotated[Record, Depends(_record_dependency)]

fastapi_app = FastAPI()
install(fastapi_app)
fastapi_app.add_middleware(Recorder)


@fastapi_app.get("/c/quick/{rid}")
async def quick(rid: str, record: Recorded, ct: RequestAborted, wait: float = 0.0) -> Any:
    # A short wait lets the watcher start (after 1 ms) and run while the response completes.
    if wait:
        await ct.sleep(wait)
    return {"rid": rid}


@fastapi_app.get("/c/quick-sync/{rid}")
def quick_sync(rid: str, ct: RequestAborted, request: Request) -> Any:
    # A ``def`` endpoint: the token comes from a worker thread here.
    if get_request_aborted(request) is not ct:
        raise AssertionError("a worker thread saw another token")
    return {"rid": rid}


@fastapi_app.get("/c/big/{rid}")
async def big(rid: str, record: Recorded) -> Response:
    # One body message: the response is complete before its first byte leaves.
    return Response(rid.encode().ljust(BIG_BODY, b"."), media_type="application/octet-stream")


@fastapi_app.get("/c/hold/{rid}")
async def hold(record: Recorded, ct: RequestAborted) -> Any:
    mark_started(record)
    await ct.sleep(HOLD_SECONDS)
    return {"held": True}


@fastapi_app.post("/c/upload/{rid}")
async def upload(request: Request, record: Recorded, ct: RequestAborted, hold: bool = False) -> Any:
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
    except ClientDisconnect:
        # Starlette says so when the body ends early; the token has the reason.
        ct.throw_if_cancellation_requested()
        raise
    if hold:
        mark_started(record)
        await ct.sleep(HOLD_SECONDS)
    return {"size": size}


@fastapi_app.get("/c/stream/{rid}")
async def stream(
    rid: str, record: Recorded, ct: RequestAborted, chunks: int = 0, tail: float = 0.0
) -> Any:
    """``chunks=0``: until the client leaves. Otherwise that many chunks, the last one ``end``,
    then ``tail`` seconds before the response ends (the window a closing client may hit). The
    first chunk is the request id."""

    async def body() -> AsyncIterator[bytes]:
        mark_started(record)
        yield f"{rid}\n".encode()
        count = 0
        while chunks == 0 or count < chunks:
            count += 1
            yield f"{count}\n".encode()
            await ct.sleep(0.002)
        yield b"end\n"
        if tail:
            await anyio.sleep(tail)

    return StreamingResponse(body(), media_type="text/plain")


@fastapi_app.get("/c/stream-sync/{rid}")
def stream_sync(
    rid: str, record: Recorded, ct: RequestAborted, chunks: int = 0, tail: float = 0.0
) -> Any:
    """The same stream from a sync iterator, which Starlette runs in worker threads."""

    def body() -> Iterator[bytes]:
        anyio.from_thread.run_sync(mark_started, record)
        yield f"{rid}\n".encode()
        count = 0
        while chunks == 0 or count < chunks:
            count += 1
            yield f"{count}\n".encode()
            ct.sleep_blocking(0.002)
        yield b"end\n"
        if tail:
            ct.wait_blocking(tail)

    return StreamingResponse(body(), media_type="text/plain")


# -- control ---------------------------------------------------------------------------------

control = APIRouter(prefix="/_ctl")


@control.get("/await/{rid}")
async def await_started(rid: str, timeout: float = 30.0) -> Any:
    """Long-poll until the endpoint of ``rid`` reached its long part (or ``timeout``)."""
    record = live.records.get(rid)
    if record is None or not record.started:
        waiter = live.waiters.setdefault(rid, anyio.Event())
        try:
            with anyio.move_on_after(timeout):
                await waiter.wait()
        finally:
            live.waiters.pop(rid, None)
    # The request cannot have finished: its client is still waiting for this answer.
    record = live.records.get(rid)
    return {"started": record is not None and record.started}


@control.get("/drain")
async def drain(wait: float = 0.0) -> Any:
    """The records of finished requests (each returned once), and the ids still running.

    ``wait``: first wait up to that long for every request in flight to finish.
    """
    with anyio.move_on_after(wait):
        while live.in_flight:
            if live.idle is None:
                live.idle = anyio.Event()
            await live.idle.wait()
    finished, live.finished = live.finished, []
    return {
        "finished": [record.as_dict() for record in finished],
        "running": sorted(live.records),
    }


def _task_names() -> list[str]:
    """The coroutine of every task on the loop (asyncio), or in the task tree (trio)."""
    try:
        return [task.get_coro().__qualname__ for task in asyncio.all_tasks()]  # type: ignore[union-attr]
    except RuntimeError:
        pass
    import trio

    names = []
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        assert task is not None  # the root task exists while trio runs
        names.append(task.coro.__qualname__)
        for nursery in task.child_nurseries:
            tasks.extend(nursery.child_tasks)
    return names


def _task_count() -> int:
    return len(_task_names())


def _pool_keeps_last_result() -> bool:
    """Whether an idle anyio worker thread still holds its last job's result or exception
    (anyio before 4.9 keeps them in the locals of its loop until the next job): each idle worker
    may then keep one request's state alive, a bounded number that is not a leak."""
    import inspect

    from anyio._backends import _asyncio

    return "del result, exception" not in inspect.getsource(_asyncio.WorkerThread.run)


_POOL_KEEPS_LAST_RESULT = _pool_keeps_last_result()


def _live_library_objects(current: RequestState | None) -> dict[str, int]:
    counts = {"RequestState": 0, "CancellationTokenSource": 0, "CancellationToken": 0}
    for obj in gc.get_objects():
        if isinstance(obj, RequestState) and obj is not current:
            counts["RequestState"] += 1
        elif isinstance(obj, CancellationTokenSource):
            counts["CancellationTokenSource"] += 1
        elif isinstance(obj, CancellationToken) and obj is not CancellationToken.NONE:
            counts["CancellationToken"] += 1
    return counts


@control.get("/stats")
async def stats(
    request: Request,
    tasks_at_most: Annotated[int, Query()] = sys.maxsize,
    timeout: float = 0.0,
) -> Any:
    """Tasks, threads and live objects of the library, after the server settled.

    ``tasks_at_most`` and ``timeout``: first wait (up to ``timeout``) until no request is in
    flight, at most that many tasks exist and no object of the library is alive. There is no
    event for a task ending or an object being freed, so this polls every 20 ms within the bound.
    Objects are freed a little after the last task ends: hypercorn on asyncio keeps, through the
    closing connection, the ``ConnectionResetError`` raised while the 499 response was written,
    whose ``__context__`` is the ``OperationCancelled`` and its frames.
    """
    current = request.scope.get(SCOPE_KEY)
    # Unreachable cycles found now were left by the run (the library promises none of its own).
    collected = gc.collect()
    with anyio.move_on_after(timeout):
        while (
            live.in_flight
            or _task_count() > tasks_at_most
            or (tasks_at_most != sys.maxsize and any(_live_library_objects(current).values()))
        ):
            await anyio.sleep(0.02)
            collected += gc.collect()
    threads = threading.enumerate()
    pool = [t for t in threads if t.name.startswith(POOL_THREAD_PREFIXES)]
    limiter = anyio.to_thread.current_default_thread_limiter()
    return {
        "tasks": _task_count(),
        "threads": len(threads),
        "pool_threads": len(pool),
        "other_threads": len(threads) - len(pool),
        "pool_limit": limiter.total_tokens,
        "pool_borrowed": limiter.borrowed_tokens,
        "in_flight": live.in_flight,
        "records_held": len(live.records) + len(live.finished),
        "waiters": len(live.waiters),
        "gc_collected": collected,
        "task_names": dict(Counter(_task_names()).most_common()),
        "live": _live_library_objects(current),
        "pool_keeps_last_result": _POOL_KEEPS_LAST_RESULT,
    }


fastapi_app.include_router(control)
# Logging is the launcher's to configure (tests.serve, common_log): importing this module, as
# the isolation tests do, must not change the test process's logging.
app = Finaliser(fastapi_app)
