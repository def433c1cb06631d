import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from psycopg.errors import QueryCanceled
from psycopg_pool import ConnectionPool

from fastapi_abort import RequestAborted, install

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
    with (
        request.app.state.pool.connection() as conn,
        ct.cancel_on(conn.cancel_safe, translate=(QueryCanceled,)),
    ):
        (answer,) = conn.execute(REPORT, (tag, seconds)).fetchone()
    return str(answer)
