"""The recipe this project used to give: ``with ct.scope(): await ...`` around a driver's call.

``/scope/sqlalchemy/{tag}`` (SQLAlchemy 2 async, ``$DRIVER``) and ``/scope/psycopg/{tag}``
(psycopg 3's async pool), for the tests that show why ``ct.run()`` replaced it; and
``/deadline/{tag}``, ``ct.run()`` on a route with a 0.3 s deadline.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fastapi_abort import RequestAborted, deadline, install
from tests.recording import Record, Recorder

URL = os.environ["DATABASE_URL"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    driver = os.environ.get("DRIVER", "asyncpg")
    engine = create_async_engine(URL.replace("postgresql://", f"postgresql+{driver}://"))
    app.state.engine = engine
    async with AsyncConnectionPool(URL, min_size=1, max_size=2) as pool:
        app.state.pool = pool
        yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)
install(app)
recorder: Recorder[Record] = Recorder(Record)
recorder.serve_await(app)
recorder.install_logging()


@app.get("/pool")
async def pool() -> dict[str, str]:
    return {}


@app.get("/scope/sqlalchemy/{tag}")
async def with_sqlalchemy(tag: str, seconds: float, ct: RequestAborted, request: Request) -> str:
    recorder.record(tag)
    query = text("SELECT CAST(:tag AS text) FROM pg_sleep(:seconds)")
    async with AsyncSession(request.app.state.engine) as session:
        with ct.scope():
            result = await session.execute(query, {"tag": tag, "seconds": seconds})
        return str(result.scalar_one())


@app.get("/scope/psycopg/{tag}")
async def with_psycopg(tag: str, seconds: float, ct: RequestAborted, request: Request) -> str:
    recorder.record(tag)
    async with request.app.state.pool.connection() as conn:
        with ct.scope():
            cursor = await conn.execute("SELECT %s::text FROM pg_sleep(%s)", (tag, seconds))
        (answer,) = await cursor.fetchone()
    return str(answer)


@app.get("/deadline/{tag}", dependencies=[Depends(deadline(0.3))])
async def with_deadline(tag: str, seconds: float, ct: RequestAborted, request: Request) -> str:
    recorder.record(tag)
    async with request.app.state.pool.connection() as conn:
        cursor = await ct.run(conn.execute("SELECT %s::text FROM pg_sleep(%s)", (tag, seconds)))
        (answer,) = await cursor.fetchone()
    return str(answer)
