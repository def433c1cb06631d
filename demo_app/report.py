"""The commission report from the ASP.NET article, on an embedded SQLite database.

``/report`` loops over every employee and each of their sales, checking the token once per
employee: close the tab and the loop stops at the next employee. ``/report/pairs`` is one long
SQL query (a self-join, several seconds) that nothing in Python can check halfway; the token
stops it halfway instead, through SQLite's progress handler.

The database is generated on first start: EMPLOYEES employees with SALES_EACH sales each, and no
index on ``sales.employee_id``, so each employee's query scans the whole table, which is what
makes the report slow.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from fastapi_abort import OperationCancelled, RequestAborted

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/report", tags=["report"])

EMPLOYEES = 500
SALES_EACH = 600
ENV_VAR = "DEMO_APP_DB"


def default_path() -> Path:
    """``$DEMO_APP_DB``, else ``fastapi-abort/demo.sqlite3`` in the user's cache directory."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fastapi-abort" / "demo.sqlite3"


def employees() -> Iterator[tuple[int, str]]:
    """The rows of ``employees``: (id, name). Shared with :mod:`demo_app.report_postgres`."""
    return ((n, f"Employee {n}") for n in range(1, EMPLOYEES + 1))


def sales() -> Iterator[tuple[int, int]]:
    """The rows of ``sales`` in id order from 1: (employee_id, amount), the same on every
    machine and for every database."""
    rng = random.Random(2017)
    return (
        (rng.randint(1, EMPLOYEES), rng.randint(10, 5000)) for _ in range(EMPLOYEES * SALES_EACH)
    )


def create_database(path: Path) -> None:
    """Generate the database at ``path`` unless it exists. Written aside, then renamed, so that
    an interrupted first start leaves no half-built file behind."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with closing(sqlite3.connect(draft)) as db, db:
        db.execute("CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, employee_id INTEGER NOT NULL, "
            "amount INTEGER NOT NULL)"
        )
        db.executemany("INSERT INTO employees VALUES (?, ?)", employees())
        db.executemany("INSERT INTO sales (employee_id, amount) VALUES (?, ?)", sales())
    draft.replace(path)
    logger.info("created %s: %d employees, %d sales", path, EMPLOYEES, EMPLOYEES * SALES_EACH)


def connect(request: Request) -> sqlite3.Connection:
    path: Path = request.app.state.db_path
    # check_same_thread=False: opened in this dependency's worker thread, used in the endpoint's.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)


Connection = Annotated[sqlite3.Connection, Depends(connect)]


@dataclass
class Commission:
    employee: str
    sales: int
    commission: float


def commission(amount: int) -> float:
    return amount * (0.05 if amount < 1000 else 0.08)


def summed(name: str, amounts: list[int]) -> Commission:
    """One employee's line of the report, whichever database the amounts came from."""
    return Commission(name, len(amounts), round(sum(map(commission, amounts)), 2))


EMPLOYEES_IN_ORDER = "SELECT id, name FROM employees ORDER BY id"
# In id order: the floats are summed in the same order on every database.
SALES = "SELECT amount FROM sales WHERE employee_id = ? ORDER BY id"


@router.get("")
def report(ct: RequestAborted, db: Connection) -> list[Commission]:
    started = time.perf_counter()
    rows = []
    with closing(db):
        for employee_id, name in db.execute(EMPLOYEES_IN_ORDER).fetchall():
            ct.throw_if_cancellation_requested()  # once per employee
            amounts = [amount for (amount,) in db.execute(SALES, (employee_id,))]
            rows.append(summed(name, amounts))
    logger.info("report of %d employees in %.1f s", len(rows), time.perf_counter() - started)
    return rows


# For each employee, how many pairs of their own sales differ in amount: one slow statement.
# Plain SQL that SQLite and PostgreSQL both run (e.id is the key, so e.name may be selected); the
# tie-break on e.id gives both the same five lines.
PAIRS = """
SELECT e.name, count(*) AS pairs
FROM sales AS a
JOIN sales AS b ON b.employee_id = a.employee_id AND b.amount < a.amount
JOIN employees AS e ON e.id = a.employee_id
GROUP BY e.id ORDER BY pairs DESC, e.id LIMIT 5
"""


@router.get("/pairs")
def pairs(ct: RequestAborted, db: Connection) -> dict[str, int]:
    with closing(db):
        # SQLite calls this every 10,000 steps of the statement, in this thread: a true answer
        # stops it. (ct.register(db.interrupt) would miss a client that leaves in the instant
        # before the statement starts: interrupt() only stops a running one.)
        db.set_progress_handler(lambda: ct.is_cancellation_requested, 10_000)
        logger.info("query started")
        try:
            rows = db.execute(PAIRS).fetchall()
        except sqlite3.OperationalError as exc:  # "interrupted"
            if not ct.is_cancellation_requested:
                raise
            logger.info("query interrupted")
            raise OperationCancelled(ct) from exc
    return dict(rows)
