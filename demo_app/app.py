"""The demo app: the lottery, the slow pages, and an index that links them."""

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from demo_app import lottery, slow
from fastapi_abort import install

INDEX = """<!doctype html>
<title>fastapi-abort demo</title>
<h1>fastapi-abort demo</h1>
<p>Leave a page before it has loaded (close the tab, press Esc, or refresh), then look at the
server's log.</p>
<ul>
  <li><a href="/happy">The lottery</a>: five draws, 0.5 s apart; it stops when you leave.</li>
  <li><a href="/slow/naive">/slow/naive</a>: 10 s of work that goes on after you leave.</li>
  <li><a href="/slow">/slow</a>: 10 s of work that stops the moment you leave.</li>
  <li><a href="/docs">/docs</a>: every route.</li>
</ul>
"""


def create_app() -> FastAPI:
    app = FastAPI(title="fastapi-abort demo")
    install(app)
    app.include_router(lottery.router)
    app.include_router(lottery.shop_router)
    app.include_router(slow.router)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return INDEX

    return app
