"""Render the results table of ``docs/databases.md`` from a run's figures.

``DATABASE_RESULTS=build/databases.jsonl DB_ABORTS=1000 python -m pytest tests/databases``, then
``python -m tests.databases.page build/databases.jsonl``: the table between the page's two
markers is replaced, the rest of the page left as it is.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from tests import ROOT

PAGE = ROOT / "docs" / "databases.md"
START = "<!-- results: rendered by python -m tests.databases.page -->"
END = "<!-- /results -->"
#: way -> (driver and pool, what the endpoint writes); the order of the table.
WAYS: dict[str, tuple[str, str]] = {
    "asyncpg": ("asyncpg pool", "`await ct.run(conn.fetchval(...))`"),
    "psycopg-async": ("psycopg 3 `AsyncConnectionPool`", "`await ct.run(conn.execute(...))`"),
    "psycopg-sync": (
        "psycopg 3 `ConnectionPool`, `def`",
        "`with ct.cancel_on(conn.cancel_safe, translate=(QueryCanceled,)):`",
    ),
    "sqlalchemy-async-asyncpg": (
        "SQLAlchemy 2 `AsyncSession`, asyncpg",
        "`await ct.run(session.execute(...))`",
    ),
    "sqlalchemy-async-psycopg": (
        "SQLAlchemy 2 `AsyncSession`, psycopg",
        "`await ct.run(session.execute(...))`",
    ),
    "sqlalchemy-sync-psycopg": (
        "SQLAlchemy 2 `Session`, psycopg, `def`",
        "`with ct.cancel_on(session.connection().connection.cancel_safe, "
        "translate=(OperationalError,)):`",
    ),
}
HEADER = (
    "| Driver and pool | The endpoint writes | Stopped on the server after | "
    "After the mixed run: aborts, connections discarded | Normal requests failed "
    "(a cancel that reached another statement) |\n|---|---|---|---|---|"
)


def table(records: list[dict[str, Any]]) -> str:
    rows = [HEADER]
    for way, (driver, code) in WAYS.items():
        stops = [
            ms for r in records if r["test"] == "stop" and r["way"] == way for ms in r["stopped_ms"]
        ]
        mixed = [r for r in records if r["test"] == "mixed" and r["way"] == way]
        stopped = (
            f"median {statistics.median(stops):.1f} ms, at most {max(stops):.1f} ms "
            f"({len(stops)} clients)"
            if stops
            else "not run"
        )
        if mixed:
            run = mixed[-1]
            discarded = "not counted" if run["discarded"] is None else run["discarded"]
            pool = f"{run['aborts']} aborts; discarded: {discarded}; pool healthy"
            failed = f"{run['normal_failed']} of {run['normal']}"
        else:
            pool = failed = "not run"
        rows.append(f"| {driver} | {code} | {stopped} | {pool} | {failed} |")
    return "\n".join(rows)


def render(records: list[dict[str, Any]], page: str) -> str:
    before, rest = page.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table(records)}\n{END}{after}"


def main(path: str) -> None:
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    PAGE.write_text(render(records, PAGE.read_text()))


if __name__ == "__main__":  # pragma: no cover
    main(*sys.argv[1:])
