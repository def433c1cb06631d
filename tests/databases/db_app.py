"""A database example of the docs (``docs/examples/db_*.py``, named by ``$EXAMPLE``), served as it
is, plus what the tests read: ``/await/{tag}/{what}`` (:mod:`tests.recording`; ``started`` is set
when a request, ``/report/{tag}`` or another, reaches the app: its path's last segment is its
tag) and ``/pool``, the pool's own account.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tests import EXAMPLES
from tests.recording import Record, Recorder

_name = os.environ["EXAMPLE"]  # an example's name, or the path of an app of the same shape
_spec = importlib.util.spec_from_file_location(
    "db_example", _name if _name.endswith(".py") else EXAMPLES / f"{_name}.py"
)
assert _spec is not None
assert _spec.loader is not None
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)
if "SQLITE_DATABASE" in os.environ:  # the SQLite recipe's database file, made by the test
    vars(example)["DATABASE"] = os.environ["SQLITE_DATABASE"]
app: FastAPI = example.app
recorder: Recorder[Record] = Recorder(Record)
recorder.serve_await(app)
recorder.install_logging()
#: Connections the pool threw away (SQLAlchemy's "invalidate" events), by the pool's account.
invalidated: list[str] = []


class Arrivals:
    """Sets a request's ``started`` event as it reaches the app (inside install())."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not path.startswith(("/await/", "/pool")):
            recorder.record(path.rsplit("/", 1)[-1]).events["started"].set()
        await self.app(scope, receive, send)


app.add_middleware(Arrivals)


@app.get("/pool")
async def pool(request: Request) -> dict[str, Any]:
    """How many connections the pool holds and how many are idle in it, in its own words."""
    state = request.app.state
    if hasattr(state, "engine"):
        engine = state.engine
        sync_pool = engine.pool
        return {
            "size": sync_pool.checkedin() + sync_pool.checkedout(),
            "in_use": sync_pool.checkedout(),
            "discarded": len(invalidated),
        }
    pg_pool = state.pool
    if hasattr(pg_pool, "get_stats"):  # psycopg_pool
        stats = pg_pool.get_stats()
        size = stats.get("pool_size", 0)
        return {
            "size": size,
            "in_use": size - stats.get("pool_available", 0),
            "discarded": stats.get("returns_bad", 0) + stats.get("connections_lost", 0),
        }
    size = pg_pool.get_size()  # asyncpg
    return {"size": size, "in_use": size - pg_pool.get_idle_size(), "discarded": None}


def _invalidated(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
    invalidated.append(repr(exception))


if "sqlalchemy" in os.environ["EXAMPLE"]:
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    # On the class: every pool, made later in the example's lifespan, reports to it.
    event.listen(Pool, "invalidate", _invalidated)
    event.listen(Pool, "soft_invalidate", _invalidated)
