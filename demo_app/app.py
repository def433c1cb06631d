"""The demo app: every example in its own module, an index that links them, and the live panel."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp

from demo_app import deadline, legacy, lottery, panel, report, slow, stream, sync_work, ticker
from fastapi_abort import install

NEEDS_ASYNCPG = (
    "--database needs asyncpg, which the demo does not install by default: "
    "pip install -e '.[demo-postgresql]'"
)

INDEX = """<!doctype html>
<title>fastapi-abort demo</title>
<style>
  body { font-family: sans-serif; max-width: 50em; margin: 2em auto; }
  td, th { padding: 0.2em 0.8em; text-align: left; }
  .cancelled, .deadline { color: #b00; } .running { color: #777; }
</style>
<h1>fastapi-abort demo</h1>
<p>Leave a page before it has loaded (close the tab, press Esc, or refresh), and watch the panel
below: the server stops the work, and says so.</p>
<ul>
  <li><a href="/happy">The lottery</a>: five draws, 0.5 s apart; it stops when you leave.</li>
  <li><a href="/slow/naive">/slow/naive</a>: 10 s of work that goes on after you leave.</li>
  <li><a href="/slow">/slow</a>: 10 s of work that stops the moment you leave.</li>
  <li><a href="/sync">/sync</a>: a <code>def</code> endpoint, ten blocking one-second steps.</li>
  <li><a href="/report">/report</a>: the commission report, employee by employee, from
  DATABASE.</li>
  <li><a href="/report/pairs">/report/pairs</a>: one long SQL query that the token interrupts.
  </li>
  <li><a href="/stream">/stream</a>: a stream of draws (server-sent events).</li>
  <li><a href="/deadline">/deadline</a>: a draw with a 2 s deadline, which the full draw misses:
  504.</li>
  <li><a href="/legacy">/legacy</a>: old code that never checks the token, cooperative and
  preemptive.</li>
  <li><a href="/ticker">/ticker</a>: a WebSocket of draws that stops when you leave.</li>
  <li><a href="/docs">/docs</a>: every route.</li>
</ul>
<h2>Last requests</h2>
<table>
  <thead><tr><th>#</th><th>Request</th><th>Outcome</th></tr></thead>
  <tbody id="panel"></tbody>
</table>
<script>
function describe(entry) {
  if (entry.outcome === "running") return "running";
  const after = ` after ${entry.elapsed.toFixed(2)} s`;
  if (entry.outcome === "cancelled") return `cancelled (${entry.status})${after}`;
  if (entry.outcome === "deadline") return `deadline passed (${entry.status})${after}`;
  if (entry.outcome === "failed") return `failed${after}`;
  return `completed (${entry.status})${after}`;
}
new EventSource("/panel/events").onmessage = (event) => {
  const rows = JSON.parse(event.data).map((entry) => {
    const row = document.createElement("tr");
    row.className = entry.outcome;
    row.dataset.path = entry.path;
    for (const text of [entry.id, `${entry.method} ${entry.path}`, describe(entry)]) {
      row.insertCell().textContent = text;
    }
    return row;
  });
  document.getElementById("panel").replaceChildren(...rows);
};
</script>
"""


def postgres_report() -> ModuleType:
    """:mod:`demo_app.report_postgres`, imported only when asked for: asyncpg is an extra."""
    try:
        from demo_app import report_postgres
    except ModuleNotFoundError as exc:
        if exc.name != "asyncpg":
            raise
        raise RuntimeError(NEEDS_ASYNCPG) from exc
    return report_postgres


def create_app(db_path: Path | None = None, database: str | None = None) -> ASGIApp:
    """The demo, as an ASGI app. ``db_path``: the SQLite file, created on first start
    (default: ``report.default_path()``). ``database``: a PostgreSQL URL; the report then runs
    there (its tables made on first start), and ``db_path`` is not used."""
    path = db_path or report.default_path()
    backend = report if database is None else postgres_report()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if database is None:
            await anyio.to_thread.run_sync(report.create_database, path)
            yield
            return
        async with backend.opened(database) as pool:
            app.state.pool = pool
            yield

    app = FastAPI(title="fastapi-abort demo", lifespan=lifespan)
    # The panel marks a request cancelled (499) or ended by its deadline (504) from this hook.
    # stopping=True: the endless panel stream and the ticker end as soon as Ctrl+C comes.
    install(app, on_abort=panel.record_abort, stopping=True)
    app.state.db_path = path
    app.state.panel = live = panel.Panel()
    for module in (lottery, slow, sync_work, backend, stream, deadline, legacy, ticker, panel):
        app.include_router(module.router)
    app.include_router(lottery.shop_router)

    page = INDEX.replace("DATABASE", "SQLite" if database is None else "PostgreSQL")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return panel.Recorder(app, live)
