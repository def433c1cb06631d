"""A trial, not a test: the psycopg `def` example with a bare ``ct.register(conn.cancel_safe)``
(and its error translated by hand) instead of ``ct.cancel_on()``. Run the mixed load on it:

    DB_EXTRA_WAY=register=tests/databases/register_app.py python -m pytest tests/databases \\
        -k "register and mixed"

and a normal request fails: a cancel that reached another request's statement.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from psycopg.errors import QueryCanceled
from psycopg_pool import ConnectionPool

from fastapi_abort import OperationCancelled, RequestAborted, install

REPORT = "SELECT %s::text FROM pg_sleep(%s)"  # a slow report, standing for any query


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("POOL_SIZE", "5"))
    with ConnectionPool(os.environ["DATABASE_URL"], min_size=1, max_size=size) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)
install(app)


@app.get("/report/{tag}")
def report(tag: str, seconds: float, ct: RequestAborted, request: Request) -> str:
    # cancel_on(): cancel_safe() runs in a thread of its own once the client leaves, and
    # leaving the block waits for it, so it never reaches the connection's next query.
    with request.app.state.pool.connection() as conn:
        ct.throw_if_cancellation_requested()
        with ct.register(conn.cancel_safe):
            try:
                (answer,) = conn.execute(REPORT, (tag, seconds)).fetchone()
            except QueryCanceled as exc:
                if not ct.is_cancellation_requested:
                    raise
                raise OperationCancelled(ct) from exc
    return str(answer)
