"""What more than one test file needs: the one bound on waits, and the helpers they share.

Test files import from here (and from the servers' helpers: ``tests.serve``, ``tests.raw_http``,
``tests.scripted``, ``tests.recording``, ``tests.events``), never from another test file. A helper
that one file alone uses stays in that file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_abort import (
    CancellationToken,
    CancellationTokenRegistration,
    RequestAborted,
    RequestAbortedMiddleware,
    get_request_aborted,
    install,
)
from fastapi_abort.testing import AbortingClient
from tests import ROOT
from tests.scripted import ScriptedServer
from tests.serve import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser

#: The bound on every wait for something that takes milliseconds when all is well (an event, a
#: thread, a token that should trip), and the length of a wait that is never meant to end before
#: the token does. Generous, because two loaded cores can stall a test for seconds; a hang then
#: fails within it instead of at pytest-timeout's 60 s.
WAIT = 10.0


#: Under CI (``CI=true``): the tests that skip locally when a tool is missing fail instead, and the
#: fuzzed ones try more examples.
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Why a test that needs a missing component failed under CI: there, every tier must run.
REQUIRED_IN_CI = "{reason}, and CI=true: {tests} must run in CI"


def missing(reason: str, tests: str) -> NoReturn:
    """Skip a test whose component (a tool, a package, a privilege) is missing, ``reason`` saying
    which; under CI fail it instead, naming ``tests`` ("the network tests")."""
    if CI:
        pytest.fail(REQUIRED_IN_CI.format(reason=reason, tests=tests))
    pytest.skip(reason)


RawApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- in process --------------------------------------------------------------------------------


def watched(app: RawApp) -> RequestAbortedMiddleware:
    """The middleware with a watcher that starts at once, so that its reads can be observed."""
    return RequestAbortedMiddleware(app, watcher_delay=0)


async def respond(send: Send, status: int = 200, body: bytes = b"ok") -> None:
    """A whole response in two messages: the start, and one final body."""
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def token_of(scope: Scope) -> CancellationToken:
    """The token of the request (or WebSocket connection) of ``scope``, as the app gets it."""
    return get_request_aborted(HTTPConnection(scope))


def client(app: ASGIApp) -> httpx.AsyncClient:
    """A client of ``app`` through httpx's in-process transport: enough where no client leaves."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def quiet_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The 499 lines logged: one per request whose client left."""
    return [r.getMessage() for r in caplog.records if "Client Closed Request" in r.getMessage()]


def nothing_above_info(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether every record logged was at INFO or below: a client that left is no problem."""
    return all(record.levelno <= logging.INFO for record in caplog.records)


# -- the token's internals, for its unit tests ---------------------------------------------------

#: A test about the asyncio loop's own machinery: on trio that path does not exist.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


class Reason:
    """A reason of the caller's own, not a CancellationReason."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class ProbeEvent(threading.Event):
    """Put in place of a token's thread event to see when a thread blocks in wait_blocking().

    ``entered`` is set when a thread starts waiting; the wait itself only starts once ``release``
    is set (it is set from the start unless a test clears it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def wait(self, timeout: float | None = None) -> bool:
        self.entered.set()
        assert self.release.wait(WAIT)
        return super().wait(timeout)


def probe_blocking_waits(token: CancellationToken) -> ProbeEvent:
    probe = ProbeEvent()
    token._event = probe
    return probe


def callbacks_of(token: CancellationToken) -> dict[CancellationTokenRegistration, None]:
    """The token's registered callbacks; it must have had some."""
    callbacks = token._callbacks
    assert callbacks is not None
    return callbacks


def callbacks_or_empty(token: CancellationToken) -> dict[CancellationTokenRegistration, None]:
    return token._callbacks or {}


def new_timer_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The deadline timer threads started since ``before`` was taken (``threading.enumerate()``)."""
    return [t for t in threading.enumerate() if t not in before and isinstance(t, threading.Timer)]


# -- the testing kit's own tests ----------------------------------------------------------------

#: The quiet line of :func:`slow_app`'s ``/slow``.
SLOW_QUIET_LINE = re.compile(r"GET /slow: 499 Client Closed Request after \d+\.\d{3} s")


def exactly(message: str) -> str:
    """A ``match=`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


def raw_client(app: RawApp, **options: Any) -> AbortingClient:
    """The kit's client of a raw ASGI ``app`` behind the middleware, without a lifespan."""
    return AbortingClient(watched(app), lifespan=False, **options)


async def read_until_disconnect(receive: Receive) -> list[Message]:
    messages = [await receive()]
    while messages[-1]["type"] != "http.disconnect":
        messages.append(await receive())
    return messages


async def nothing(receive: Receive) -> None:
    pass


async def three_messages_read(
    content: Any, before: Callable[[Receive], Awaitable[None]] = nothing
) -> list[tuple[bytes, bool]]:
    """POST ``content`` to an app that calls ``before``, then reads three messages."""
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await before(receive)
        received.extend([await receive() for _ in range(3)])
        await respond(send)

    async with raw_client(app) as client:
        await client.post("/", content=content)
    return [(m["body"], m["more_body"]) for m in received]


def slow_app(deadline: float | None = None) -> FastAPI:
    """/slow waits for its token; /quick answers at once."""
    app = FastAPI()
    install(app, deadline=deadline)

    @app.get("/slow")
    async def slow(ct: RequestAborted) -> str:
        await ct.wait()
        ct.throw_if_cancellation_requested()
        return "never sent"

    @app.get("/quick")
    async def quick(ct: RequestAborted) -> str:
        return "quick"

    return app


# -- WebSocket, in process ---------------------------------------------------------------------


def ws_scope(path: str = "/ws") -> Scope:
    """The scope of a WebSocket connection to ``path``."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
    }


class WebSocketServer(ScriptedServer):
    """The scripted server, speaking WebSocket: the peer connects, sends, leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.push({"type": "websocket.connect"})

    def text(self, text: str) -> None:
        self.push({"type": "websocket.receive", "text": text})

    def leave(self, code: int = 1001) -> None:
        self.push({"type": "websocket.disconnect", "code": code})


async def serve(app: Any, server: ScriptedServer, path: str = "/ws") -> None:
    """Run ``app`` behind the middleware for one WebSocket connection from ``server``."""
    with anyio.fail_after(WAIT):
        await watched(app)(ws_scope(path), server.receive, server.send)


# -- the demo, as the README starts it ---------------------------------------------------------

# The one warning the demo logs on purpose: the full draw of /deadline misses its deadline.
DEADLINE_WARNING = (
    r"WARNING fastapi_abort: GET /deadline/draw: 504 Gateway Timeout: its 2\.000 s deadline passed"
)


class Demo:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float = 20) -> str:
        """Block until the server writes a line matching ``pattern`` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if re.search(pattern, line):
                    self.seen.remove(line)
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue

    def drained(self) -> list[str]:
        """Every line the demo wrote so far, those a test waited for included."""
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return self.seen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


#: Seconds the demo may take to stop once told to.
DEMO_STOP = 15.0


@contextlib.contextmanager
def running_demo(db: Path, database: str | None = None) -> Iterator[Demo]:
    """``python -m demo_app`` on a free port, with its SQLite database at ``db`` (or, with
    ``database``, on that PostgreSQL DSN, ``db`` then staying unused); stopped on exit, and
    checked for warnings and errors in its log. A demo that does not stop in time (a request
    still running keeps uvicorn from stopping) is killed, so that no process outlives the test,
    and the failure says so with the demo's log."""
    port = free_port()
    command = [sys.executable, "-m", "demo_app", "--port", str(port), "--db", str(db)]
    process = subprocess.Popen(
        command if database is None else [*command, "--database", database],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Demo(process, port)
    try:
        # Filling PostgreSQL's tables on first start takes a few seconds on a loaded machine.
        server.wait_for_line(rf"Uvicorn running on http://127\.0\.0\.1:{port}", timeout=60)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=DEMO_STOP)
        except subprocess.TimeoutExpired as timeout:
            process.kill()
            process.wait(timeout=DEMO_STOP)
            message = f"the demo did not stop within {DEMO_STOP} s: {server.drained()}"
            raise AssertionError(message) from timeout
        finally:
            server.pump.join(timeout=DEMO_STOP)  # reads to EOF, then the pipe can be closed
            assert process.stdout is not None
            process.stdout.close()
    errors = [
        line
        for line in server.drained()
        if re.search(r"WARNING|ERROR|Traceback", line) and not re.search(DEADLINE_WARNING, line)
    ]
    assert not errors


@contextlib.contextmanager
def requesting(demo: Demo, path: str) -> Iterator[None]:
    """Send a GET of ``path`` on a raw connection, and close it on exit without reading the
    response: the client leaves."""
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        yield


# -- a real browser ------------------------------------------------------------------------------

#: Debian's chromium (``apt-get install chromium``), driven through the playwright package.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Headless, without the sandbox (which needs privileges a container may lack), and nothing of
#: its own on the network: no QUIC, no background requests, no component updates, no sync.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
NO_PLAYWRIGHT = "the playwright package is not installed (pip install playwright)"
NO_CHROMIUM = "no chromium at {path} (apt-get install chromium)"


@contextlib.contextmanager
def chromium(tests: str, *flags: str) -> Iterator[Browser]:
    """Debian's chromium, headless, with :data:`CHROMIUM_FLAGS` and ``flags``, closed on exit.

    Each launch gets a fresh temporary profile (playwright makes one for ``launch()``). Skips
    ``tests`` when chromium or playwright is missing; under CI fails them instead.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing(NO_PLAYWRIGHT, tests)
    if not os.access(CHROMIUM, os.X_OK):
        missing(NO_CHROMIUM.format(path=CHROMIUM), tests)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *flags]
        )
        try:
            yield browser
        finally:
            browser.close()
