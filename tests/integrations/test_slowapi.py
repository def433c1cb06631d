"""slowapi's rate limiter with fastapi-abort, on real uvicorn
(``tests.integrations.apps.slowapi_app``, with the plugin ``app`` and without ``plain``): the
same answers and limit headers, the 429 included; a client that leaves ends quietly, and its
request counted against the limit as any other."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integrations.twin_servers import Start, assert_quiet_line, headers_of, twin_servers
from tests.raw_http import leave, new_id, request_bytes

pytestmark = pytest.mark.server

MODULE = "tests.integrations.apps.slowapi_app"
KIND = "uvicorn-h11"
#: Headers that carry the clock: when the window resets, how long to wait.
CLOCK_HEADERS = ("x-ratelimit-reset", "retry-after")
#: What slowapi logs, at WARNING, for each request over the limit.
OVER_THE_LIMIT = "exceeded at endpoint"


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    with twin_servers(MODULE, tmp_path_factory.mktemp("slowapi"), OVER_THE_LIMIT) as start:
        yield start


def answers(
    start: Start, variant: str, path: str, count: int
) -> list[tuple[int, object, list[tuple[str, str]]]]:
    served = start(KIND, variant)
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
        responses = [client.get(path) for _ in range(count)]
    return [
        (r.status_code, r.json(), [(k, v) for k, v in headers_of(r) if k not in CLOCK_HEADERS])
        for r in responses
    ]


def test_the_limit_answers_the_same_with_the_plugin(start: Start) -> None:
    rid = new_id()
    with_plugin = answers(start, "app", f"/limited/{rid}", 3)
    assert with_plugin == answers(start, "plain", f"/limited/{rid}", 3)
    assert [status for status, _, _ in with_plugin] == [200, 200, 429]
    remaining = [dict(headers)["x-ratelimit-remaining"] for _, _, headers in with_plugin]
    assert remaining == ["1", "0", "0"]


def leave_mid_endpoint(start: Start, path: str, rid: str) -> dict[str, object]:
    served = start(KIND, "app")
    with served.connect() as client:
        client.sendall(request_bytes(path))
        assert served.wait_for(rid, "started")["happened"]
        leave(client)
    return served.wait_for(rid, "logged")


def test_a_client_that_leaves_ends_quietly_and_counts_against_the_limit(start: Start) -> None:
    served = start(KIND, "app")
    rid = new_id()
    result = leave_mid_endpoint(start, f"/limited-wait/{rid}", rid)
    assert result["ended"] == "OperationCancelled"
    assert isinstance(result["log_lines"], list)
    assert_quiet_line(served, f"/limited-wait/{rid}", result["log_lines"])
    # One request a minute: the next one is refused at once, before the endpoint runs.
    ((status, body, _),) = answers(start, "app", f"/limited-wait/{rid}", 1)
    assert (status, body) == (429, {"error": "Rate limit exceeded: 1 per 1 minute"})
