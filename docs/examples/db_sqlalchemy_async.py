import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fastapi_abort import RequestAborted, install

REPORT = text("SELECT CAST(:tag AS text) FROM pg_sleep(:seconds)")  # standing for any query
DRIVER = os.environ.get("DRIVER", "asyncpg")  # or psycopg


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["DATABASE_URL"].replace("postgresql://", f"postgresql+{DRIVER}://")
    size = int(os.environ.get("POOL_SIZE", "5"))
    app.state.engine = engine = create_async_engine(url, pool_size=size, max_overflow=0)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)
install(app)


@app.get("/report/{tag}")
async def report(tag: str, seconds: float, ct: RequestAborted, request: Request) -> str:
    async with AsyncSession(request.app.state.engine) as session:
        # run(): cancelled once, the driver cancels the query on the server and waits for it.
        result = await ct.run(session.execute(REPORT, {"tag": tag, "seconds": seconds}))
        return str(result.scalar_one())
