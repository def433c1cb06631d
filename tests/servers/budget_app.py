"""One service of a chain, for the deadline budget's real-server tests.

Each service of ``tests/servers/test_budget.py`` runs this module under real uvicorn, told by its
environment who it is (``BUDGET_NAME``), what it calls next (``BUDGET_NEXT``, a URL, or none:
the last service), its own deadline (``BUDGET_DEADLINE``, seconds, or none) and the most a
caller's budget header may give it (``BUDGET_MAX``, seconds, or none: the header is ignored).
It reports to the test through :mod:`tests.events` (``BUDGET_EVENTS``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request

from fastapi_abort import BUDGET_HEADER, OperationCancelled, RequestAborted, install
from fastapi_abort.httpx import TokenTransport
from tests.events import Emitter

NAME = os.environ.get("BUDGET_NAME", "service")
NEXT = os.environ.get("BUDGET_NEXT") or None
DEADLINE = float(os.environ["BUDGET_DEADLINE"]) if os.environ.get("BUDGET_DEADLINE") else None
MAX = float(os.environ["BUDGET_MAX"]) if os.environ.get("BUDGET_MAX") else None
#: Longer than any test waits: a service that nothing stops is seen not to stop.
FOREVER = 60

emit = Emitter("BUDGET_EVENTS")
pool = httpx.AsyncHTTPTransport()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await pool.aclose()


app = FastAPI(lifespan=lifespan)
install(app, deadline=DEADLINE, max_budget=MAX)


@app.get("/remaining")
async def remaining(request: Request, ct: RequestAborted) -> dict[str, object]:
    """What the caller's budget header gave the request."""
    return {"headers": request.headers.getlist(BUDGET_HEADER), "remaining": ct.time_remaining()}


@app.get("/chain/{rid}")
async def chain(rid: str, request: Request, ct: RequestAborted, mode: str = "transport") -> object:
    """Call the next service (if any), then wait for the token.

    ``mode=transport``: through ``TokenTransport``, which sends the budget and is cancelled by
    the token. ``mode=manual``: a plain client that sends the header written by hand from
    ``ct.time_remaining()`` and waits for the reply whatever happens (so that no service sees
    its caller leave before its own deadline), then ``ct.sleep()``.
    """
    emit(
        rid,
        f"{NAME}.started",
        headers=request.headers.getlist(BUDGET_HEADER),
        remaining=ct.time_remaining(),
    )
    try:
        if NEXT is not None:
            before = ct.time_remaining()
            emit(rid, f"{NAME}.calling", remaining=before)
            if mode == "transport":
                transport = TokenTransport(ct, pool)
                async with httpx.AsyncClient(transport=transport, base_url=NEXT) as client:
                    reply = await client.get(f"/chain/{rid}", params={"mode": mode}, timeout=60)
            else:
                headers = {} if before is None else {BUDGET_HEADER: str(int(before * 1000))}
                async with httpx.AsyncClient(transport=pool, base_url=NEXT) as client:
                    reply = await client.get(
                        f"/chain/{rid}", params={"mode": mode}, headers=headers, timeout=60
                    )
            emit(rid, f"{NAME}.replied", status=reply.status_code)
        await ct.sleep(FOREVER)
    except OperationCancelled as exc:
        emit(rid, f"{NAME}.cancelled", reason=str(exc.reason))
        raise
    return {"slept": FOREVER}
