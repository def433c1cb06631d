"""The demo app, started the way the README says (``python -m demo_app``), on 127.0.0.1."""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_demo(db: Path) -> Iterator[Demo]:
    """``python -m demo_app`` on a free port, with its database at ``db``; stopped on exit, and
    checked for warnings and errors in its log."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "demo_app", "--port", str(port), "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Demo(process, port)
    try:
        server.wait_for_line(rf"Uvicorn running on http://127\.0\.0\.1:{port}")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=15)
        server.pump.join(timeout=15)  # reads to EOF, then the pipe can be closed
        assert process.stdout is not None
        process.stdout.close()
        while not server.lines.empty():
            server.seen.append(server.lines.get_nowait())
    errors = [line for line in server.seen if re.search(r"WARNING|ERROR|Traceback", line)]
    assert not errors


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo") / "demo.sqlite3") as server:
        yield server


def test_the_shop_front_links_to_the_draw_in_a_new_tab(demo: Demo) -> None:
    page = httpx.get(f"{demo.url}/happy", timeout=10)
    assert page.status_code == 200
    assert re.search(r'<a href="/happy/draw" target="_blank">', page.text)


@pytest.mark.parametrize("path", ["/happy/draw", "/happy/draw-from-request", "/happy/shop/draw"])
def test_a_finished_draw_shows_the_lucky_number(demo: Demo, path: str) -> None:
    page = httpx.get(f"{demo.url}{path}", timeout=20)
    assert page.status_code == 200
    match = re.search(r'alert\("Your lucky number: (\d+)"\)', page.text)
    assert match is not None
    assert 0 <= int(match.group(1)) <= 999


@pytest.mark.parametrize("path", ["/happy/draw", "/happy/draw-from-request", "/happy/shop/draw"])
def test_a_player_who_leaves_stops_the_draw(demo: Demo, path: str) -> None:
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    demo.wait_for_line(r"demo_app\.lottery: request cancelled")
    line = demo.wait_for_line(rf"fastapi_abort: GET {re.escape(path)}: 499 Client Closed Request")
    # The draw stopped at a round boundary, well before its 2.5 s.
    elapsed = float(re.search(r"after (\d+\.\d+) s", line).group(1))  # type: ignore[union-attr]
    assert elapsed < 2.5


def test_the_slow_request_stops_when_its_client_leaves(demo: Demo) -> None:
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as client:
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    line = demo.wait_for_line(r"fastapi_abort: GET /slow: 499 Client Closed Request")
    elapsed = float(re.search(r"after (\d+\.\d+) s", line).group(1))  # type: ignore[union-attr]
    assert elapsed < 10


def leave_after_request(demo: Demo, path: str) -> None:
    """Send a request, then close the connection without reading the response."""
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())


def test_the_sync_endpoint_stops_between_steps(demo: Demo) -> None:
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as client:
        client.sendall(b"GET /sync HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        demo.wait_for_line(r"demo_app\.sync_work: step 1 of 10")
    line = demo.wait_for_line(r"fastapi_abort: GET /sync: 499 Client Closed Request")
    elapsed = float(re.search(r"after (\d+\.\d+) s", line).group(1))  # type: ignore[union-attr]
    assert elapsed < 10


def test_the_report_stops_when_its_client_leaves(demo: Demo) -> None:
    leave_after_request(demo, "/report")
    demo.wait_for_line(r"fastapi_abort: GET /report: 499 Client Closed Request")


def test_the_long_query_is_interrupted(demo: Demo) -> None:
    with socket.create_connection(("127.0.0.1", demo.port), timeout=10) as client:
        client.sendall(b"GET /report/pairs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        demo.wait_for_line(r"demo_app\.report: query started")
    demo.wait_for_line(r"demo_app\.report: query interrupted")
    demo.wait_for_line(r"fastapi_abort: GET /report/pairs: 499 Client Closed Request")


def test_the_stream_stops_generating_when_its_client_leaves(demo: Demo) -> None:
    with httpx.stream("GET", f"{demo.url}/stream/draws", timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines) == "event: draw"
    line = demo.wait_for_line(r"demo_app\.stream: stream ended after (\d+) of 20 draws")
    assert int(re.search(r"after (\d+) of", line).group(1)) < 20  # type: ignore[union-attr]
    demo.wait_for_line(r"fastapi_abort: GET /stream/draws: 499 Client Closed Request")


def test_the_panel_shows_how_requests_ended(demo: Demo) -> None:
    httpx.get(f"{demo.url}/happy/shop/quick-pick", timeout=10)
    with httpx.stream("GET", f"{demo.url}/panel/events", timeout=10) as response:
        data = next(line for line in response.iter_lines() if line.startswith("data: "))
    assert '"path": "/happy/shop/quick-pick", "outcome": "completed", "status": 200' in data
