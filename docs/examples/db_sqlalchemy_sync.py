import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from fastapi_abort import RequestAborted, install

REPORT = text("SELECT CAST(:tag AS text) FROM pg_sleep(:seconds)")  # standing for any query


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
    size = int(os.environ.get("POOL_SIZE", "5"))
    app.state.engine = engine = create_engine(url, pool_size=size, max_overflow=0)
    yield
    engine.dispose()


app = FastAPI(lifespan=lifespan)
install(app)


@app.get("/report/{tag}")
def report(tag: str, seconds: float, ct: RequestAborted, request: Request) -> str:
    with Session(request.app.state.engine) as session:
        # The psycopg connection under the session (checked out of the pool here): its
        # cancel_safe() stops the statement; SQLAlchemy wraps QueryCanceled in OperationalError.
        cancel = session.connection().connection.cancel_safe
        with ct.cancel_on(cancel, translate=(OperationalError,)):
            result = session.execute(REPORT, {"tag": tag, "seconds": seconds})
        return str(result.scalar_one())
