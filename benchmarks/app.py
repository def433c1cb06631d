"""The apps under test: the same routes on plain FastAPI and with fastapi-abort installed.

``build("plain")`` and ``build("abort")`` serve the same paths. Where the abort side takes the
token, the plain side takes a no-op ``Request`` dependency, so FastAPI's own dependency cost is
charged to both; ``build("relay")`` is the plain app with :class:`Relay`, the least that any
middleware watching the response costs. Control routes under ``/_bench/`` let the driver wait
for events on the server side (bounded long-polls) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_abort import CancellationToken, RequestAborted, install

VARIANTS = ("plain", "abort", "relay")
STREAM_CHUNKS = 5
STREAM_CHUNK = b"x" * 64 + b"\n"


async def noop(request: Request) -> None:
    """The plain side's stand-in for ``request_aborted``: a ``Request`` dependency, no work."""


Noop = Annotated[None, Depends(noop)]


class Relay:
    """A pure-ASGI middleware that does nothing but hand ``send`` on through a function of its
    own: the floor under any middleware that notes where the response is (the micro-benchmarks
    report it next to fastapi-abort; docs/benchmarks.md)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        def relay_send(message: Message) -> Awaitable[None]:
            return send(message)

        await self.app(scope, receive, relay_send)


def burn(iterations: int) -> int:
    """CPU-bound work with a fixed cost, whatever the thread scheduling."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


@dataclass
class Trial:
    """One detection-latency trial: the request has started; the server saw the client leave."""

    started: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    stamp: float | None = None

    def seen(self) -> None:
        self.stamp = time.monotonic()
        self.done.set()


@dataclass
class Board:
    """What the server records for the driver. Touched on the event loop only."""

    trials: dict[str, Trial] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    chunks_run: int = 0
    chunks_after_trip: list[int] = field(default_factory=list)
    releases: set[anyio.Event] = field(default_factory=set)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def trial(self, rid: str) -> Trial:
        if rid not in self.trials:
            self.trials[rid] = Trial()
        return self.trials[rid]

    def count(self, name: str, delta: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + delta
        self.changed.set()
        self.changed = anyio.Event()

    def work_done(self, chunks: int, after_trip: int | None) -> None:
        self.chunks_run += chunks
        if after_trip is not None:
            self.chunks_after_trip.append(after_trip)
        self.count("finished")

    async def until(self, test: Callable[[], bool], wait: float) -> bool:
        with anyio.move_on_after(wait):
            while not test():
                await self.changed.wait()
        return test()


class Progress:
    """Chunks of work done, and how many of them ran after the token tripped."""

    def __init__(self, ct: CancellationToken) -> None:
        self.done = 0
        self._at_trip: int | None = None
        ct.register(self._trip)

    def _trip(self) -> None:
        self._at_trip = self.done

    def step(self, iterations: int) -> None:
        burn(iterations)
        self.done += 1

    def after_trip(self) -> int | None:
        return None if self._at_trip is None else self.done - self._at_trip


def announce(trial: Trial, after: float) -> None:
    """Tell the driver the request runs, ``after`` seconds from now (a timer, not a sleep in the
    endpoint, so a polling loop keeps its own rhythm and the close lands at any phase of it)."""
    asyncio.get_running_loop().call_later(after, trial.started.set)


async def arrive() -> None:
    # An async dependency runs on the loop even for a def endpoint waiting for a worker thread.
    board.count("arrived")


Arrive = Annotated[None, Depends(arrive)]

board = Board()


def control_routes(app: FastAPI) -> None:
    @app.get("/_bench/started/{rid}")
    async def started(rid: str, wait: float = 10) -> dict[str, bool]:
        trial = board.trial(rid)
        with anyio.move_on_after(wait):
            await trial.started.wait()
        return {"happened": trial.started.is_set()}

    @app.get("/_bench/done/{rid}")
    async def done(rid: str, wait: float = 10) -> dict[str, float | None]:
        trial = board.trial(rid)
        with anyio.move_on_after(wait):
            await trial.done.wait()
        board.trials.pop(rid, None)
        return {"stamp": trial.stamp}

    @app.get("/_bench/count/{name}")
    async def count(
        name: str, at_least: int = 0, at_most: int = 1 << 30, wait: float = 10
    ) -> dict[str, Any]:
        def test() -> bool:
            return at_least <= board.counts.get(name, 0) <= at_most

        met = await board.until(test, wait)
        return {"met": met, "count": board.counts.get(name, 0)}

    @app.get("/_bench/release")
    async def release() -> dict[str, int]:
        events, board.releases = board.releases, set()
        for event in events:
            event.set()
        return {"released": len(events)}

    @app.get("/_bench/work")
    async def work() -> dict[str, Any]:
        result = {
            "counts": dict(board.counts),
            "chunks_run": board.chunks_run,
            "chunks_after_trip": board.chunks_after_trip,
        }
        board.counts.clear()
        board.chunks_run = 0
        board.chunks_after_trip = []
        return result


def plain_routes(app: FastAPI) -> None:
    @app.get("/token")
    async def token(_noop: Noop) -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/stream")
    async def stream(_noop: Noop) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(STREAM_CHUNKS):
                yield STREAM_CHUNK

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/hold")
    async def hold(_noop: Noop) -> dict[str, str]:
        event = anyio.Event()
        board.releases.add(event)
        board.count("held")
        try:
            await event.wait()
        finally:
            board.count("held", -1)
        return {"hello": "world"}

    @app.get("/hold-event")
    async def hold_event(_noop: Noop) -> dict[str, str]:
        """As /hold: the counterpart of the other side's /hold-event (same routes, same order)."""
        return await hold(_noop)

    @app.get("/poll/{rid}")
    async def poll(rid: str, request: Request, interval: float, after: float) -> dict[str, str]:
        trial = board.trial(rid)
        announce(trial, after)
        # The loop being measured against: polling, as Starlette's docs suggest.
        while not await request.is_disconnected():  # noqa: ASYNC110
            await anyio.sleep(interval)
        trial.seen()
        return {"hello": "world"}

    @app.get("/work-async")
    async def work_async(_arrived: Arrive, chunks: int, iterations: int) -> dict[str, int]:
        for _ in range(chunks):
            burn(iterations)
            await anyio.lowlevel.checkpoint()
        board.work_done(chunks, None)
        return {"chunks": chunks}

    @app.get("/work-sync")
    def work_sync(_arrived: Arrive, chunks: int, iterations: int) -> dict[str, int]:
        for _ in range(chunks):
            burn(iterations)
        anyio.from_thread.run_sync(board.work_done, chunks, None)
        return {"chunks": chunks}


def abort_routes(app: FastAPI) -> None:
    @app.get("/token")
    async def token(ct: RequestAborted) -> dict[str, str]:
        ct.throw_if_cancellation_requested()
        return {"hello": "world"}

    @app.get("/stream")
    async def stream(ct: RequestAborted) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(STREAM_CHUNKS):
                ct.throw_if_cancellation_requested()
                yield STREAM_CHUNK

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/hold")
    async def hold(ct: RequestAborted) -> dict[str, str]:
        board.count("held")
        try:
            await ct.wait()
        finally:
            board.count("held", -1)
        return {"hello": "world"}

    @app.get("/hold-event")
    async def hold_event(ct: RequestAborted) -> dict[str, str]:
        """Takes the token, but holds as the plain side's /hold does: what the token and its
        watcher cost alone, whatever the request waits on."""
        event = anyio.Event()
        board.releases.add(event)
        board.count("held")
        try:
            await event.wait()
        finally:
            board.count("held", -1)
        return {"hello": "world"}

    @app.get("/watch/{rid}")
    async def watch(rid: str, ct: RequestAborted, after: float) -> dict[str, str]:
        trial = board.trial(rid)
        ct.register(trial.seen)
        announce(trial, after)
        await ct.wait()
        return {"hello": "world"}

    @app.get("/work-async")
    async def work_async(
        _arrived: Arrive, ct: RequestAborted, chunks: int, iterations: int
    ) -> dict[str, int]:
        progress = Progress(ct)
        try:
            for _ in range(chunks):
                ct.throw_if_cancellation_requested()
                progress.step(iterations)
                await anyio.lowlevel.checkpoint()  # anyio.sleep(0): the watcher gets its turn
        finally:
            board.work_done(progress.done, progress.after_trip())
        return {"chunks": chunks}

    @app.get("/work-sync")
    def work_sync(
        _arrived: Arrive, ct: RequestAborted, chunks: int, iterations: int
    ) -> dict[str, int]:
        progress = Progress(ct)
        try:
            for _ in range(chunks):
                ct.throw_if_cancellation_requested()
                progress.step(iterations)
        finally:
            anyio.from_thread.run_sync(board.work_done, progress.done, progress.after_trip())
        return {"chunks": chunks}


def build(variant: str) -> FastAPI:
    """The app for ``variant``: ``"plain"`` FastAPI, ``"abort"`` with ``install(app)``, or
    ``"relay"``: plain FastAPI with :class:`Relay` where fastapi-abort's middleware would be."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    app = FastAPI()
    if variant == "abort":
        install(app)
        abort_routes(app)
    else:
        if variant == "relay":
            app.add_middleware(Relay)
        plain_routes(app)

    @app.get("/json")
    async def json_() -> dict[str, str]:
        return {"hello": "world"}

    control_routes(app)
    return app


def new_id() -> str:
    return uuid.uuid4().hex[:12]
