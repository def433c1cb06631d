import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from psycopg_pool import AsyncConnectionPool

from fastapi_abort import RequestAborted, install

REPORT = "SELECT %s::text FROM pg_sleep(%s)"  # a slow report, standing for any query


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("POOL_SIZE", "5"))
    async with AsyncConnectionPool(os.environ["DATABASE_URL"], min_size=1, max_size=size) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)
install(app)


@app.get("/report/{tag}")
async def report(tag: str, seconds: float, ct: RequestAborted, request: Request) -> str:
    async with request.app.state.pool.connection() as conn:
        # run(): cancelled once, psycopg cancels the query on the server and waits for it.
        cursor = await ct.run(conn.execute(REPORT, (tag, seconds)))
        (answer,) = await cursor.fetchone()
    return str(answer)
