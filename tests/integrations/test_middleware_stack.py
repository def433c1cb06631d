"""fastapi-abort among Starlette's own middleware, on real uvicorn.

``tests.integrations.apps.middleware_app`` stacks GZip, CORS, sessions and two
``BaseHTTPMiddleware`` (one added before ``install()``, one after) with the plugin (``app``) and
without (``plain``): every answer to a client that stays is the same on both, bytes and headers;
a client that leaves ends as one quiet line, and what the middleware inside ours sees then is
pinned.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest

from tests.integrations.apps.twins import ORIGIN
from tests.integrations.twin_servers import Start, assert_quiet_line, headers_of, twin_servers
from tests.raw_http import leave, new_id, read_until, request_bytes

pytestmark = pytest.mark.server

MODULE = "tests.integrations.apps.middleware_app"
KIND = "uvicorn-h11"
#: Requests that differ only in what a client that stays gets: compressed, preflighted,
#: cross-origin, with a session, streamed through GZip.
REQUESTS = {
    "gzip": ("GET", "/big/{rid}", {"accept-encoding": "gzip"}),
    "preflight": (
        "OPTIONS",
        "/big/{rid}",
        {"origin": ORIGIN, "access-control-request-method": "GET"},
    ),
    "cors": ("GET", "/big/{rid}", {"origin": ORIGIN, "accept-encoding": "identity"}),
    "session": ("GET", "/session/{rid}", {"accept-encoding": "identity"}),
    "stream": ("GET", "/stream/{rid}?n=3", {"accept-encoding": "gzip"}),
}


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    with twin_servers(MODULE, tmp_path_factory.mktemp("middleware")) as start:
        yield start


def fetch(
    start: Start, variant: str, method: str, path: str, headers: dict[str, str]
) -> tuple[httpx.Response, bytes]:
    served = start(KIND, variant)
    # No decoding by httpx: the bytes on the wire are compared.
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
        request = client.build_request(method, path, headers=headers)
        response = client.send(request, stream=True)
        return response, b"".join(response.iter_raw())


def body_of(response: httpx.Response, raw: bytes) -> bytes:
    """The body as sent, uncompressed if GZip compressed it."""
    return gzip.decompress(raw) if response.headers.get("content-encoding") == "gzip" else raw


def cookie_attributes(response: httpx.Response) -> list[str]:
    """The attributes of each Set-Cookie, its signed value (which holds the time) left out."""
    return [value.split(";", 1)[1] for value in response.headers.get_list("set-cookie")]


@pytest.mark.parametrize("case", list(REQUESTS))
def test_a_client_that_stays_gets_the_same_answer_with_the_plugin(start: Start, case: str) -> None:
    method, template, headers = REQUESTS[case]
    rid = new_id()
    path = template.format(rid=rid)
    with_plugin, raw = fetch(start, "app", method, path, headers)
    without, raw_without = fetch(start, "plain", method, path, headers)
    assert with_plugin.status_code == without.status_code
    # GZip's header holds the time on Starlette before 0.39: compare what it compressed.
    assert body_of(with_plugin, raw) == body_of(without, raw_without)
    kept = [(k, v) for k, v in headers_of(with_plugin) if k != "set-cookie"]
    assert kept == [(k, v) for k, v in headers_of(without) if k != "set-cookie"]
    assert cookie_attributes(with_plugin) == cookie_attributes(without)
    # Both BaseHTTPMiddleware ran, and the case did what it is for.
    if case != "preflight":
        assert (with_plugin.headers["x-before"], with_plugin.headers["x-after"]) == ("1", "1")
    if case in ("gzip", "stream"):
        assert with_plugin.headers["content-encoding"] == "gzip"
        assert gzip.decompress(raw).startswith(b"chunk 0" if case == "stream" else b"{")
    if case in ("preflight", "cors"):
        assert with_plugin.headers["access-control-allow-origin"] == ORIGIN
    if case == "session":
        assert raw == b'{"rid":"%s"}' % rid.encode()
        assert cookie_attributes(with_plugin) != []


def test_a_client_that_leaves_mid_endpoint_ends_quietly(start: Start) -> None:
    served = start(KIND, "app")
    rid = new_id()
    with served.connect() as client:
        client.sendall(request_bytes(f"/wait/{rid}"))
        assert served.wait_for(rid, "started")["happened"]
        leave(client)
    result = served.wait_for(rid, "logged")
    assert result["ended"] == "OperationCancelled"
    assert_quiet_line(served, f"/wait/{rid}", result["log_lines"])
    # The handler answered inside every middleware: nothing escaped to them.
    assert result["escaped"] == []


def leave_mid_stream(
    start: Start, route: str, ended: str = "OperationCancelled"
) -> tuple[str, dict[str, object]]:
    served = start(KIND, "app")
    rid = new_id()
    with served.connect() as client:
        client.sendall(request_bytes(f"/{route}/{rid}", headers=(("accept-encoding", "gzip"),)))
        read_until(client, b"\r\n\r\n")
        leave(client)
    result = served.wait_for(rid, "logged")
    assert result["ended"] == ended
    assert_quiet_line(served, f"/{route}/{rid}", result["log_lines"])
    return rid, result


def test_a_stream_cut_short_shows_middleware_inside_ours_nothing(start: Start) -> None:
    # The disconnect reaches the stream's listener through the BaseHTTPMiddleware inside ours
    # before the token's waiters wake (Inbox._departed): Starlette cancels the generator in its
    # ct.sleep(), as it cancels its anyio.sleep() without fastapi-abort.
    _, result = leave_mid_stream(start, "stream", ended="CancelledError")
    assert result["escaped"] == []


def test_a_def_stream_cut_short_shows_middleware_inside_ours_nothing(start: Start) -> None:
    # The def generator's sleep_blocking() raises, in its worker thread, the cancellation of
    # the task Starlette cancels: the stream ends as it does without fastapi-abort.
    _, result = leave_mid_stream(start, "stream-sync", ended="CancelledError")
    assert result["escaped"] == []
