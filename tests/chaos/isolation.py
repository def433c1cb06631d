"""The app of the isolation checks: who sees which token, with many requests in flight at once.

``GET /i/{rid}?n=N`` collects the request's token from every kind of consumer: a ``def``
dependency in a worker thread (the first to ask, so the token is created from that thread), the
endpoint's parameter, an async dependency, a worker thread started by the endpoint, and the
streaming body (an async iterator on the loop, or a sync one in worker threads, by ``sync``).
Before it answers, the endpoint waits until ``N`` requests have arrived: all of them are in flight
at the same time. The token objects themselves are kept (not their ids, which CPython reuses once
an object is freed) until ``/_ctl/isolation`` has compared them.

``POST /i/secret/{rid}`` reads its body and then waits for its client to leave: the requests that
carry a secret in their query string, headers, cookies and body.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from fastapi_abort import CancellationToken, RequestAborted, get_request_aborted, install
from tests.chaos.app import HOLD_SECONDS, RECORD_KEY, Finaliser, Record, control, mark_started

#: How long a request waits for the others to arrive. Far more than they need.
BARRIER_SECONDS = 60.0
CONSUMERS = (
    "def dependency",
    "endpoint",
    "async dependency",
    "worker thread",
    "streaming body",
)

_lock = threading.Lock()
#: Request id -> (consumer, token) for every token a consumer of that request was given.
seen: dict[str, list[tuple[str, CancellationToken]]] = {}


class Barrier:
    """Holds each request until ``count`` have arrived (bounded)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.arrived = 0
        self.all_here = anyio.Event()
        self.timeouts = 0

    async def wait(self, count: int) -> None:
        self.arrived += 1
        if self.arrived >= count:
            self.all_here.set()
        with anyio.move_on_after(BARRIER_SECONDS):
            await self.all_here.wait()
        if not self.all_here.is_set():
            self.timeouts += 1


barrier = Barrier()


def _saw(rid: str, consumer: str, token: CancellationToken) -> None:
    # Called from the loop and from worker threads alike.
    with _lock:
        seen.setdefault(rid, []).append((consumer, token))


def _thread_dependency(rid: str, request: Request) -> CancellationToken:
    # A ``def`` dependency: FastAPI runs it in a worker thread, and it asks first.
    token = get_request_aborted(request)
    _saw(rid, "def dependency", token)
    return token


async def _async_dependency(rid: str, ct: RequestAborted) -> CancellationToken:
    _saw(rid, "async dependency", ct)
    return ct


isolation_app = FastAPI()
install(isolation_app)
isolation_app.include_router(control)


@isolation_app.get("/i/{rid}")
async def collect(
    rid: str,
    request: Request,
    first: Annotated[CancellationToken, Depends(_thread_dependency)],
    ct: RequestAborted,
    dependency: Annotated[CancellationToken, Depends(_async_dependency)],
    n: int,
    sync: bool = False,
) -> StreamingResponse:
    _saw(rid, "endpoint", ct)
    await barrier.wait(n)
    _saw(rid, "worker thread", await anyio.to_thread.run_sync(get_request_aborted, request))

    async def body() -> AsyncIterator[bytes]:
        _saw(rid, "streaming body", get_request_aborted(request))
        yield rid.encode()

    def sync_body() -> Iterator[bytes]:
        _saw(rid, "streaming body", get_request_aborted(request))
        yield rid.encode()

    return StreamingResponse(sync_body() if sync else body(), media_type="text/plain")


@isolation_app.post("/i/secret/{rid}")
async def secret(request: Request, ct: RequestAborted) -> Any:
    record: Record = request.scope[RECORD_KEY]
    # The Finaliser reads the token's final state from the record.
    record.token = ct
    await request.body()
    mark_started(record)
    await ct.sleep(HOLD_SECONDS)
    return {"held": True}


@isolation_app.get("/_ctl/isolation")
async def check() -> dict[str, Any]:
    """Compare the tokens kept so far, then forget them (and reset the barrier)."""
    with _lock:
        collected = dict(seen)
        seen.clear()
    owners: dict[int, set[str]] = {}
    consumers: Counter[str] = Counter()
    one_token = 0
    incomplete = []
    for rid, tokens in collected.items():
        consumers.update(consumer for consumer, _ in tokens)
        if all(token is tokens[0][1] for _, token in tokens):
            one_token += 1
        if sorted(consumer for consumer, _ in tokens) != sorted(CONSUMERS):
            incomplete.append(rid)
        for _, token in tokens:
            # Every token is alive here (``collected`` holds them all): ids are unique.
            owners.setdefault(id(token), set()).add(rid)
    result = {
        "requests": len(collected),
        "one_token_each": one_token,
        "distinct_tokens": len(owners),
        "shared": sum(1 for rids in owners.values() if len(rids) > 1),
        "incomplete": incomplete[:10],
        "consumers": dict(consumers),
        "barrier_timeouts": barrier.timeouts,
        "arrived": barrier.arrived,
    }
    barrier.reset()
    return result


app = Finaliser(isolation_app, prefix="/i/secret/")
