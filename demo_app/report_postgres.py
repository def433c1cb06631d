"""The commission report of :mod:`demo_app.report`, on PostgreSQL through an asyncpg pool.

``python -m demo_app --database postgresql://...`` serves these routes instead of the SQLite ones:
the same paths, the same data (:func:`demo_app.report.employees` and
:func:`~demo_app.report.sales`), the same numbers. Each statement runs in ``await ct.run(...)``,
the way docs/databases.md gives for asyncpg: when the client leaves, asyncpg sends the server a
cancel request, and the statement stops there, not only in Python.

The tables live in a schema of their own (:data:`SCHEMA`), made and filled on first start, in one
transaction: nothing of the user's database is touched, and an interrupted first start leaves
nothing behind. Imported only for ``--database``: asyncpg is the ``demo-postgresql`` extra.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import APIRouter, Request

from demo_app import report
from fastapi_abort import OperationCancelled, RequestAborted

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/report", tags=["report"])

SCHEMA = "fastapi_abort_demo"
CREATED = "created schema %s: %d employees, %d sales"
STARTED = "query started"
INTERRUPTED = "query interrupted"
REPORTED = "report of %d employees in %.1f s"
TABLES = """
CREATE SCHEMA {schema};
CREATE TABLE {schema}.employees (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE {schema}.sales (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    employee_id integer NOT NULL,
    amount integer NOT NULL
);
"""
# asyncpg numbers its parameters; the statements are otherwise the SQLite ones, word for word.
SALES = report.SALES.replace("?", "$1")


async def create_tables(conn: Any) -> None:
    """Make and fill :data:`SCHEMA` unless it exists. One transaction, under a lock, so that two
    demos starting at once do not both fill it."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", SCHEMA)
        if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", SCHEMA):
            return
        await conn.execute(TABLES.format(schema=SCHEMA))
        await conn.copy_records_to_table(
            "employees", schema_name=SCHEMA, records=report.employees()
        )
        rows = list(report.sales())
        await conn.copy_records_to_table(
            "sales", schema_name=SCHEMA, records=rows, columns=("employee_id", "amount")
        )
        # Statistics now, so that the first report is planned as every later one.
        await conn.execute(f"ANALYZE {SCHEMA}.employees, {SCHEMA}.sales")
    logger.info(CREATED, SCHEMA, report.EMPLOYEES, len(rows))


@asynccontextmanager
async def opened(dsn: str) -> AsyncIterator[Any]:
    """A pool on ``dsn`` whose connections see :data:`SCHEMA` first, the tables made."""
    async with asyncpg.create_pool(
        dsn, min_size=1, max_size=5, server_settings={"search_path": SCHEMA}
    ) as pool:
        async with pool.acquire() as conn:
            await create_tables(conn)
        yield pool


@router.get("")
async def report_employees(ct: RequestAborted, request: Request) -> list[report.Commission]:
    started = time.perf_counter()
    rows = []
    async with request.app.state.pool.acquire() as conn:
        # run() checks the token first, then cancels the statement once if the client leaves
        # during it: asyncpg sends the server a cancel request and waits for its answer.
        for employee_id, name in await ct.run(conn.fetch(report.EMPLOYEES_IN_ORDER)):
            sales = await ct.run(conn.fetch(SALES, employee_id))  # once per employee
            rows.append(report.summed(name, [amount for (amount,) in sales]))
    logger.info(REPORTED, len(rows), time.perf_counter() - started)
    return rows


@router.get("/pairs")
async def pairs(ct: RequestAborted, request: Request) -> dict[str, int]:
    async with request.app.state.pool.acquire() as conn:
        logger.info(STARTED)
        try:
            rows = await ct.run(conn.fetch(report.PAIRS))
        except OperationCancelled:
            logger.info(INTERRUPTED)
            raise
    return {name: count for name, count in rows}
