"""The demo app, started the way the README says (``python -m demo_app``), on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import DEADLINE_WARNING, DEMO_STOP, Demo, requesting, running_demo

pytestmark = pytest.mark.server


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
    with requesting(demo, path):
        pass
    demo.wait_for_line(r"demo_app\.lottery: request cancelled")
    line = demo.wait_for_line(rf"fastapi_abort: GET {re.escape(path)}: 499 Client Closed Request")
    # The draw stopped at a round boundary, well before its 2.5 s.
    elapsed = float(re.search(r"after (\d+\.\d+) s", line).group(1))  # type: ignore[union-attr]
    assert elapsed < 2.5


def test_the_slow_request_stops_when_its_client_leaves(demo: Demo) -> None:
    with requesting(demo, "/slow"):
        pass
    line = demo.wait_for_line(r"fastapi_abort: GET /slow: 499 Client Closed Request")
    elapsed = float(re.search(r"after (\d+\.\d+) s", line).group(1))  # type: ignore[union-attr]
    assert elapsed < 10


def test_the_sync_endpoint_stops_between_steps(demo: Demo) -> None:
    with requesting(demo, "/sync"):
        demo.wait_for_line(r"demo_app\.sync_work: step 1 of 10")
    line = demo.wait_for_line(r"fastapi_abort: GET /sync: 499 Client Closed Request")
    elapsed = float(re.search(r"after (\d+\.\d+) s", line).group(1))  # type: ignore[union-attr]
    assert elapsed < 10


def test_the_report_stops_when_its_client_leaves(demo: Demo) -> None:
    with requesting(demo, "/report"):
        pass
    demo.wait_for_line(r"fastapi_abort: GET /report: 499 Client Closed Request")


def test_the_long_query_is_interrupted(demo: Demo) -> None:
    with requesting(demo, "/report/pairs"):
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


def panel_entry(demo: Demo, path: str, outcome: str) -> dict[str, object]:
    """The newest panel entry for ``path`` once it has ``outcome``, read from the panel's event
    stream: the panel records how a request ended just after its response was sent, so the
    client may get the response first. Bounded: the stream's read timeout."""
    with httpx.stream("GET", f"{demo.url}/panel/events", timeout=10) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            entries = [entry for entry in json.loads(line[6:]) if entry["path"] == path]
            if entries and entries[0]["outcome"] == outcome:
                entry: dict[str, object] = entries[0]
                return entry
    raise AssertionError(f"the panel stream ended before {path} was {outcome}")


def test_the_panel_shows_how_requests_ended(demo: Demo) -> None:
    httpx.get(f"{demo.url}/happy/shop/quick-pick", timeout=10)
    entry = panel_entry(demo, "/happy/shop/quick-pick", "completed")
    assert entry["status"] == 200


def test_a_draw_past_its_deadline_gets_a_504_problem(demo: Demo) -> None:
    response = httpx.get(f"{demo.url}/deadline/draw", timeout=20)
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 504
    assert problem["detail"] == "The request did not complete within its 2 s deadline."
    demo.wait_for_line(r"demo_app\.deadline: draw stopped after [0-4] of 5 rounds: deadline$")
    demo.wait_for_line(DEADLINE_WARNING)
    entry = panel_entry(demo, "/deadline/draw", "deadline")
    assert entry["status"] == 504


def test_a_quick_pick_finishes_within_its_deadline(demo: Demo) -> None:
    response = httpx.get(f"{demo.url}/deadline/draw", params={"rounds": 1}, timeout=20)
    assert response.status_code == 200
    body = response.json()
    assert body["rounds"] == 1
    assert 0 <= body["lucky"] <= 999


def test_preemptive_legacy_code_stops_when_its_client_leaves(demo: Demo) -> None:
    with requesting(demo, "/legacy/draw-preemptive"):
        demo.wait_for_line(r"demo_app\.legacy: preemptive draw: round 1 of 5")
    # The sleep in progress was cancelled: the rounds still to come never ran.
    line = demo.wait_for_line(r"demo_app\.legacy: preemptive draw: drew \d of 5 rounds")
    assert int(re.search(r"drew (\d)", line).group(1)) < 5  # type: ignore[union-attr]
    demo.wait_for_line(r"fastapi_abort: GET /legacy/draw-preemptive: 499 Client Closed Request")
    entry = panel_entry(demo, "/legacy/draw-preemptive", "cancelled")
    assert entry["status"] == 499


def test_cooperative_legacy_code_runs_to_its_end_for_nobody(demo: Demo) -> None:
    with requesting(demo, "/legacy/draw"):
        demo.wait_for_line(r"demo_app\.legacy: cooperative draw: round 1 of 5")
    demo.wait_for_line(r"demo_app\.legacy: cooperative draw: drew 5 of 5 rounds")
    # The token knew that the client had left; the code never asked it.
    demo.wait_for_line(r"demo_app\.legacy: cooperative draw: finished; player gone: True")
    demo.wait_for_line(r"fastapi_abort: GET /legacy/draw: 499 Client Closed Request")
    entry = panel_entry(demo, "/legacy/draw", "cancelled")
    assert entry["status"] == 499


def open_websocket(demo: Demo, path: str) -> socket.socket:
    """A WebSocket handshake over a raw socket; returns the socket, upgraded."""
    client = socket.create_connection(("127.0.0.1", demo.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    client.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = client.recv(1)  # one byte at a time: the frames that follow stay unread
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return client


def receive_exactly(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        assert chunk, data
        data += chunk
    return data


def receive_frame(client: socket.socket) -> tuple[int, bytes]:
    """One unfragmented frame from the server (unmasked, shorter than 126 bytes): its first
    byte (FIN and opcode) and its payload."""
    opcode, length = receive_exactly(client, 2)
    assert length < 126, length
    return opcode, receive_exactly(client, length)


def receive_text_frame(client: socket.socket) -> str:
    opcode, payload = receive_frame(client)
    assert opcode == 0x81, hex(opcode)  # FIN, text
    return payload.decode()


def test_the_ticker_sends_draws_and_stops_when_its_peer_leaves(demo: Demo) -> None:
    with open_websocket(demo, "/ticker/draws") as client:
        draw = json.loads(receive_text_frame(client))
        assert draw["draw"] == 1
        assert 0 <= draw["number"] <= 999
    # The ticker never reads from the socket: its token tripped for it.
    demo.wait_for_line(r"demo_app\.ticker: ticker stopped after draw \d+: client disconnected")
    entry = panel_entry(demo, "/ticker/draws", "cancelled")
    assert entry["method"] == "WEBSOCKET"


def test_ctrl_c_ends_the_panel_stream_and_the_ticker_and_the_demo_exits(
    tmp_path: Path,
) -> None:
    """Both never end by themselves, and uvicorn waits for them at its shutdown: without the
    stopping token the demo would not exit (``running_demo`` kills it after its bound, and
    fails). With it, SIGINT, as Ctrl+C sends, ends each with its last word."""
    with running_demo(tmp_path / "demo.sqlite3") as demo:
        ticker = open_websocket(demo, "/ticker/draws")
        with ticker, httpx.stream("GET", f"{demo.url}/panel/events", timeout=10) as panel:
            lines = panel.iter_lines()
            assert next(lines).startswith("data: [")
            assert json.loads(receive_text_frame(ticker))["draw"] == 1
            demo.process.send_signal(signal.SIGINT)
            rest = list(lines)  # to the end of the response, which the server ends
            frames = [receive_frame(ticker)]
            while frames[-1][0] != 0x88:  # FIN, close
                frames.append(receive_frame(ticker))
        assert rest[-4:] == ["event: restart", "retry: 2000", "data: server restarting", ""]
        code = int.from_bytes(frames[-1][1][:2], "big")
        assert (code, frames[-1][1][2:]) == (1001, b"server restarting")
        demo.wait_for_line(r"demo_app\.ticker: ticker stopped after draw \d+: shutdown")
        assert demo.process.wait(timeout=DEMO_STOP) == 0
