"""Cancellation across services: a client leaves A, and A's call to B is cancelled with it.

The chain tests run two real services in their own processes (B under uvicorn; A under uvicorn,
or hypercorn on trio), a raw-socket client that leaves A, and wait for B's token to trip through
B's ``/await/{rid}/{what}`` (a bounded wait on the server side). The example of the docs runs in
this process, on real sockets. TokenTransport on its own: tests/unit/test_httpx.py.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from tests import ROOT
from tests.raw_http import leave, new_id, request_bytes
from tests.serve import KINDS, Served, assert_one_quiet_line, listening, running
from tests.support import WAIT

EXAMPLES = ROOT / "docs" / "examples"
#: Gives service A (tests/propagation_apps.py) the address of service B. Not imported from there:
#: importing the apps would set up their logging in this process.
UPSTREAM = "PROPAGATION_UPSTREAM"

#: How soon B's token must trip once A's client has left: a correctness bound, not a speed goal.
PROPAGATION_BOUND = 5.0

# -- the chain: a raw client -> service A -> service B, on real servers ---------------------------


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("propagation")


@contextlib.contextmanager
def run_service(
    logs: Path, role: str, kind: str, upstream: Served | None = None
) -> Iterator[Served]:
    """Run service ``role`` under server ``kind``; on the way out, check its log stayed quiet."""
    env = {} if upstream is None else {UPSTREAM: f"http://127.0.0.1:{upstream.port}"}
    target = f"tests.propagation_apps:{role}"
    with running(kind, logs / f"{role}-{kind}.log", target, env=env) as service:
        yield service
    # Nothing above INFO from any logger, in the whole life of the service.
    assert not service.noisy(), service.output()


@pytest.fixture(scope="module")
def service_b(logs: Path) -> Iterator[Served]:
    with run_service(logs, "b", "uvicorn-httptools") as service:
        yield service


@pytest.fixture(scope="module", params=KINDS)
def service_a(request: pytest.FixtureRequest, logs: Path, service_b: Served) -> Iterator[Served]:
    with run_service(logs, "a", request.param, service_b) as service:
        yield service


def leave_mid_call(a: Served, b: Served, path: str, rid: str, wait_on: Served) -> int:
    """Call A at ``path``, leave once ``wait_on`` says ``started``/``streaming``; return when
    (``time.monotonic_ns()``)."""
    event = "streaming" if wait_on is a else "started"
    with a.connect() as client:
        client.sendall(request_bytes(path))
        assert wait_on.wait_for(rid, event)["happened"]
        return leave(client)


@pytest.mark.server
@pytest.mark.parametrize(
    ("route", "downstream", "via"),
    [("scope", "hold", "scope"), ("transport", "hold", "transport"), ("stream", "stream", "")],
)
def test_client_leaving_a_trips_the_token_of_b(
    service_a: Served, service_b: Served, route: str, downstream: str, via: str
) -> None:
    rid = new_id()
    wait_on = service_a if route == "stream" else service_b
    left_ns = leave_mid_call(service_a, service_b, f"/call/{route}/{rid}", rid, wait_on)

    b = service_b.wait_for(rid, "logged")
    a = service_a.wait_for(rid, "logged")
    assert b["tripped"]
    assert b["reason"] == "client disconnected"
    assert b["finished"]
    assert (b["tripped_ns"] - left_ns) / 1e9 < PROPAGATION_BOUND
    assert a["reason"] == "client disconnected"
    assert a["outcome"] == "OperationCancelled"
    assert_one_quiet_line(service_a, f"/call/{route}/{rid}", a)
    assert_one_quiet_line(service_b, f"/{downstream}/{rid}", b)
    print(
        f"\nA ({service_a.kind}) /{route}: client left -> A's token "
        f"{(a['tripped_ns'] - left_ns) / 1e6:.2f} ms -> B's token "
        f"{(b['tripped_ns'] - left_ns) / 1e6:.2f} ms"
    )
    if via:
        # The aborted connection was closed, not put back in the pool: A's next call to B goes
        # out on another connection, and works.
        after = new_id()
        reply = service_a.get(f"/ping/{via}/{after}")
        assert reply["rid"] == after
        assert reply["client_port"] != b["client_port"]


# -- the example of the docs: the shop and the warehouse, in this process, on real sockets ---------


class InProcessServer(uvicorn.Server):
    """uvicorn in the test's own event loop, leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serving(app: ASGIApp, sock: socket.socket) -> AsyncIterator[None]:
    server = InProcessServer(uvicorn.Config(app, log_config=None))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        try:
            yield
        finally:
            server.should_exit = True
    sock.close()


class AbortedLines(logging.Handler):
    """Collects the quiet lines, and says when one for a path has been logged."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.changed = anyio.Event()

    def emit(self, log: logging.LogRecord) -> None:
        self.lines.append(log.getMessage())
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, path: str) -> None:
        while not any(line.startswith(f"GET {path}: 499 ") for line in self.lines):
            await self.changed.wait()


@pytest.fixture
def aborted_lines() -> Iterator[AbortedLines]:
    handler = AbortedLines()
    logger = logging.getLogger("fastapi_abort")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs on asyncio only
@pytest.mark.parametrize(
    ("shop_path", "warehouse_path", "leave_after"),
    [("/items/7", "/stock/7", b""), ("/deliveries", "/deliveries", b"delivery 0")],
)
async def test_example_shopper_leaving_stops_the_warehouse(
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    aborted_lines: AbortedLines,
    shop_path: str,
    warehouse_path: str,
    leave_after: bytes,
) -> None:
    warehouse_socket, shop_socket = listening(64), listening(64)
    monkeypatch.setenv("WAREHOUSE_URL", f"http://127.0.0.1:{warehouse_socket.getsockname()[1]}")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "propagation", raising=False)
    example = importlib.import_module("propagation")
    arrived = anyio.Event()

    async def warehouse(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            arrived.set()
        await example.warehouse(scope, receive, send)

    async with serving(warehouse, warehouse_socket), serving(example.shop, shop_socket):
        with anyio.fail_after(WAIT):
            port = shop_socket.getsockname()[1]
            async with await anyio.connect_tcp("127.0.0.1", port) as shopper:
                await shopper.send(f"GET {shop_path} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
                await arrived.wait()
                received = b""
                while leave_after not in received:
                    received += await shopper.receive()
            # The shopper has left the shop; the warehouse must see the shop leave in turn.
            await aborted_lines.wait_for(warehouse_path)
            await aborted_lines.wait_for(shop_path)
    for path in {shop_path, warehouse_path}:
        mine = [line for line in aborted_lines.lines if line.startswith(f"GET {path}: 499 ")]
        assert len(mine) == (2 if shop_path == warehouse_path else 1), aborted_lines.lines
    # Quiet: nothing from any logger above INFO, in either service.
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []
