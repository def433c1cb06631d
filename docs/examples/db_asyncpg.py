import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request

from fastapi_abort import RequestAborted, install

REPORT = "SELECT $2::text FROM pg_sleep($1)"  # a slow report, standing for any query


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("POOL_SIZE", "5"))
    async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=size) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)
install(app)


@app.get("/report/{tag}")
async def report(tag: str, seconds: float, ct: RequestAborted, request: Request) -> str:
    async with request.app.state.pool.acquire() as conn:
        # run(): cancelled once, asyncpg sends the server a cancel request and waits for it.
        answer: str = await ct.run(conn.fetchval(REPORT, seconds, tag))
    return answer
