"""The report endpoint of the query part, plain and with fastapi-abort: ``plain`` and ``abort``.

The same asyncpg pool (``$BENCH_DATABASE_URL``) and the same statement on both sides; the
fastapi-abort side awaits it through ``ct.run()``, as docs/databases.md gives for asyncpg.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request

from fastapi_abort import RequestAborted, install

#: A CPU-bound report; the comment marks it in pg_stat_activity and in the server's log.
REPORT = (
    "SELECT count(*) FROM generate_series(1, 1000) AS a(i), generate_series(1, $1::int) AS b(j)"
    " WHERE (i # j) % 7 = 3 -- report"
)
MARK = "-- report"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with asyncpg.create_pool(os.environ["BENCH_DATABASE_URL"], min_size=1) as pool:
        app.state.pool = pool
        yield


plain = FastAPI(lifespan=lifespan)
abort = FastAPI(lifespan=lifespan)
install(abort)


@plain.get("/report")
async def plain_report(rows: int, request: Request) -> int:
    async with request.app.state.pool.acquire() as conn:
        count: int = await conn.fetchval(REPORT, rows)
    return count


@abort.get("/report")
async def abort_report(rows: int, ct: RequestAborted, request: Request) -> int:
    async with request.app.state.pool.acquire() as conn:
        count: int = await ct.run(conn.fetchval(REPORT, rows))
    return count
