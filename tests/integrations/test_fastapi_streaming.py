"""FastAPI's own streaming with fastapi-abort: endpoints that ``yield``, as server-sent events
(``fastapi.sse.EventSourceResponse``), JSON Lines, or raw bytes (``StreamingResponse``).

On real servers, ``tests.integrations.apps.fastapi_streaming_app`` with the plugin (``app``) and
without (``plain``): what a client that stays gets is the same on both; a client that leaves
mid-stream trips the token and ends as one quiet line. The recipe of the docs
(``docs/examples/recipe_fastapi_streaming.py``) runs in process too, as the other examples do.

FastAPI before 0.134 has no ``fastapi.sse`` nor streaming endpoints: the module is skipped there
(the oldest versions run of ``.ci/run``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

pytest.importorskip("fastapi.sse", reason="FastAPI before 0.134 has no streaming endpoints")

from tests import EXAMPLES
from tests.integrations.twin_servers import (
    Start,
    assert_quiet_line,
    headers_of,
    twin_servers,
)
from tests.raw_http import leave, new_id, read_until, request_bytes

MODULE = "tests.integrations.apps.fastapi_streaming_app"
ROUTES = ("sse", "sse-sync", "jsonl", "raw")
ASYNC_ROUTES = ("sse", "jsonl", "raw")
#: What the first item of each route looks like on the wire.
FIRST_ITEM = {"sse": b"id: 0", "sse-sync": b'"n":0', "jsonl": b'"n":0', "raw": b"chunk 0"}
#: How an async generator ends when its client leaves: Starlette's StreamingResponse hears the
#: disconnect and cancels it (CancelledError), or the token trips first (OperationCancelled).
STOPPED = ("CancelledError", "OperationCancelled")


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    with twin_servers(MODULE, tmp_path_factory.mktemp("fastapi-streaming")) as start:
        yield start


def get(start: Start, kind: str, variant: str, path: str) -> httpx.Response:
    served = start(kind, variant)
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
        return client.get(path)


@pytest.mark.server
@pytest.mark.parametrize("route", ROUTES)
def test_a_stream_read_to_its_end_is_the_same_with_the_plugin(start: Start, route: str) -> None:
    # The path holds no id: the items of /sse-sync and /jsonl carry it.
    with_plugin = get(start, "uvicorn-h11", "app", f"/{route}/same?n=3")
    without = get(start, "uvicorn-h11", "plain", f"/{route}/same?n=3")
    assert with_plugin.status_code == without.status_code == 200
    assert headers_of(with_plugin) == headers_of(without)
    assert with_plugin.content == without.content
    if route == "jsonl":
        lines = with_plugin.content.splitlines()
        assert [json.loads(line) for line in lines] == [{"rid": "same", "n": i} for i in range(3)]


def leave_mid_stream(start: Start, kind: str, variant: str, route: str) -> str:
    served = start(kind, variant)
    rid = new_id()
    with served.connect() as client:
        client.sendall(request_bytes(f"/{route}/{rid}"))
        read_until(client, FIRST_ITEM[route])
        leave(client)
    return rid


@pytest.mark.server
@pytest.mark.parametrize("kind", ["uvicorn-h11", "granian"])
@pytest.mark.parametrize("route", ROUTES)
def test_a_client_that_leaves_mid_stream_trips_the_token(
    start: Start, kind: str, route: str
) -> None:
    served = start(kind, "app")
    rid = leave_mid_stream(start, kind, "app", route)
    result = served.wait_for(rid, "logged")
    assert result["reason"] == "client disconnected"
    ended = served.wait_for(rid, "finished")["ended"]
    # A def generator runs in a worker thread, which no cancellation reaches: the token wakes
    # it, and its check raises the cancellation of the task the response cancelled, if it
    # did (as without the plugin), else OperationCancelled.
    assert ended in STOPPED
    assert_quiet_line(served, f"/{route}/{rid}", result["log_lines"])


@pytest.mark.server
@pytest.mark.parametrize("route", ASYNC_ROUTES)
def test_without_the_plugin_the_generator_is_cancelled(start: Start, route: str) -> None:
    """What FastAPI does alone, for comparison. (A ``def`` generator is then left at its
    ``yield`` until garbage collected: not run here, its cleanup would run on no loop.)"""
    served = start("uvicorn-h11", "plain")
    rid = leave_mid_stream(start, "uvicorn-h11", "plain", route)
    result = served.wait_for(rid, "finished")
    assert result["ended"] == "CancelledError"
    assert result["log_lines"] == []


# -- the recipe of the docs ----------------------------------------------------------------------


def load(name: str) -> ModuleType:
    """A fresh import of ``docs/examples/<name>.py``."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", ["/chat?prompt=hello+world", "/chat.jsonl?prompt=hello+world"])
def test_the_recipe_stops_when_the_reader_leaves(
    caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    recipe = load("recipe_fastapi_streaming")
    testing = load("testing")

    async def scenario() -> list[dict[str, Any]]:
        with anyio.fail_after(10):
            sent: list[dict[str, Any]] = await testing.leave_after(recipe.app, path, 0.5)
            return sent

    messages = anyio.run(scenario)
    body = b"".join(m.get("body", b"") for m in messages)
    first = b'{"n":0,"text":"hello"}\n' if "jsonl" in path else b'event: token\ndata: "hello"\n'
    assert body.startswith(first), body
    (line,) = (m for m in caplog.messages if ": 499 Client Closed Request after " in m)
    assert re.match(rf"^GET {re.escape(path.split('?')[0])}: 499 ", line)
    if "jsonl" not in path:
        (sent,) = (m for m in caplog.messages if m.startswith("sent "))
        assert 0 < int(sent.split()[1]) < 100
