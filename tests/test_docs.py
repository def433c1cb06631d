"""The examples of the documentation, run: each lives in docs/examples/ and is included into
its page, so the code a reader sees is the code tested here."""

from __future__ import annotations

import importlib
import logging
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests import EXAMPLES, ROOT

DOCS = ROOT / "docs"


@pytest.fixture(autouse=True)
def examples_importable() -> Iterator[None]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLES))


def example(name: str) -> ModuleType:
    """A fresh import of ``docs/examples/<name>.py``: one app per test."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def leave_after(app: ASGIApp, target: str, seconds: float) -> None:
    testing = example("testing")

    async def scenario() -> None:
        with anyio.fail_after(10):
            await testing.leave_after(app, target, seconds)

    anyio.run(scenario)


def aborted_after(caplog: pytest.LogCaptureFixture, path: str) -> float:
    (line,) = (m for m in caplog.messages if m.startswith(f"GET {path}: 499 Client Closed"))
    return float(re.search(r"after (\d+\.\d+) s", line).group(1))  # type: ignore[union-attr]


def test_every_example_is_in_a_page() -> None:
    pages = "".join(page.read_text() for page in DOCS.glob("*.md"))
    included = set(re.findall(r'--8<-- "examples/([\w.]+)"', pages))
    assert included == {path.name for path in EXAMPLES.glob("*.py")}


def test_the_quickstart_test(caplog: pytest.LogCaptureFixture) -> None:
    example("test_lottery").test_the_draw_stops_when_the_player_leaves(caplog)


def test_a_finished_quickstart_draw() -> None:
    transport = httpx.ASGITransport(app=example("quickstart").app)

    async def draw() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/happy/draw")

    assert re.fullmatch(r"<p>Your lucky number: \d+</p>", anyio.run(draw).text)


def test_httpx_recipe(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO)
    recipe = example("recipe_httpx")

    async def slow_upstream(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(30)

    upstream = httpx.AsyncClient(transport=httpx.ASGITransport(app=slow_upstream))
    monkeypatch.setattr(recipe, "upstream", upstream)
    leave_after(recipe.app, "/weather?city=Oslo", 0.3)
    assert aborted_after(caplog, "/weather") < 5


def test_sqlite_recipe(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    recipe = example("recipe_sqlite")
    database = tmp_path / "shop.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE sales (amount INTEGER)")
        db.executemany("INSERT INTO sales VALUES (?)", ((n % 997,) for n in range(20_000)))
    db.close()
    monkeypatch.setattr(recipe, "DATABASE", str(database))
    leave_after(recipe.app, "/pairs", 0.3)
    assert aborted_after(caplog, "/pairs") < 5


def test_subprocess_recipe(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    leave_after(example("recipe_subprocess").app, "/convert", 0.3)
    assert aborted_after(caplog, "/convert") < 5


def test_streaming_recipe(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    leave_after(example("recipe_streaming").app, "/chat?prompt=hello+world", 0.5)
    (sent,) = (m for m in caplog.messages if m.startswith("sent "))
    assert int(sent.split()[1]) < 100
    assert aborted_after(caplog, "/chat") < 5


def test_sync_recipe(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    leave_after(example("recipe_sync").app, "/export", 0.3)
    assert aborted_after(caplog, "/export") < 2


def test_background_recipe(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    transport = httpx.ASGITransport(app=example("recipe_background").app)

    async def order() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/orders/7")

    assert anyio.run(order).json() == {"order": 7}
    assert "receipt for order 7 sent" in caplog.messages


def get(app: ASGIApp, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)

    async def fetch() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with anyio.fail_after(10):
                return await client.get(path)

    return anyio.run(fetch)


def test_deadlines_example(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    app = example("deadlines").app
    response = get(app, "/report")
    assert response.status_code == 504
    assert response.json()["detail"] == "The request did not complete within its 2 s deadline."
    assert get(app, "/export").json() == {"export": "done"}
    leave_after(app, "/legacy", 0.2)
    assert aborted_after(caplog, "/legacy") < 5


def test_prometheus_example() -> None:
    metrics = example("metrics_prometheus")
    leave_after(metrics.app, "/draw/7", 0.1)
    text = get(metrics.app, "/metrics/").text
    assert 'http_requests_aborted_total{method="GET",route="/draw",status="499"} 1.0' in text
    assert 'http_request_aborted_after_seconds_count{route="/draw"} 1.0' in text
    assert 'http_response_aborted_body_bytes_total{route="/draw"} 0.0' in text


def test_opentelemetry_example() -> None:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    leave_after(example("metrics_otel").app, "/draw", 0.1)
    data = reader.get_metrics_data()
    assert data is not None
    (scope,) = (
        s
        for r in data.resource_metrics
        for s in r.scope_metrics
        if s.scope.name == "fastapi_abort.example"
    )
    points: dict[str, Any] = {m.name: m.data.data_points[0] for m in scope.metrics}
    assert points["http.server.aborted_requests"].value == 1
    assert points["http.server.aborted_requests"].attributes == {
        "http.request.method": "GET",
        "http.response.status_code": 499,
        "fastapi_abort.reason": "client disconnected",
        "fastapi_abort.response_started": "false",
    }
    assert points["http.server.aborted_after"].count == 1
    assert points["http.server.aborted_body_size"].value == 0


def test_websocket_example(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "fastapi_abort")
    app = example("websocket").app
    sent: list[dict[str, Any]] = []
    first_draw = anyio.Event()

    async def receive() -> dict[str, Any]:
        if not sent:
            return {"type": "websocket.connect"}
        await first_draw.wait()  # the peer reads one draw, then closes its tab
        return {"type": "websocket.disconnect", "code": 1001}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.send":
            first_draw.set()

    scope = {"type": "websocket", "path": "/draws", "headers": [], "query_string": b""}

    async def session() -> None:
        with anyio.fail_after(10):
            await app(scope, receive, send)

    anyio.run(session)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
    assert [r for r in caplog.records if r.name == "fastapi_abort"] == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    "test",
    [
        "test_the_draw_stops_when_the_player_leaves",
        "test_the_ticker_stops_after_the_lines_the_reader_saw",
    ],
)
def test_the_testing_kit_example(test: str, backend: str) -> None:
    anyio.run(getattr(example("testing_kit"), test), backend=backend)
