"""sentry-sdk's Starlette and FastAPI integrations with fastapi-abort.

``tests.integrations.apps.sentry_app`` serves the app without the plugin and with it, with
Sentry's default integrations and with ``middleware_spans=True``, under uvicorn; Sentry's
transport keeps its events in the server process. A normal request gives the same transaction
with and without the plugin (name, status, spans' ops, names and statuses); a client that
leaves gives no error event and the transaction :mod:`tests.integrations.works_with` says.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integrations import works_with
from tests.integrations.support import ABORTS, ENDPOINTS, Client, leave_mid_request, unordered
from tests.integrations.twin_servers import Start, assert_quiet_line, twin_servers
from tests.raw_http import new_id

pytestmark = pytest.mark.server

MODULE = "tests.integrations.apps.sentry_app"
KIND = "uvicorn-h11"
SPANS = ("", "spans_")


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    with twin_servers(MODULE, tmp_path_factory.mktemp("sentry")) as start:
        yield start


def events(client: Client, rid: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.collected(rid)
    return found


def comparable(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with their spans in a canonical order (a stream's sends and its disconnect
    listener's receives interleave differently from run to run)."""
    return [{**event, "spans": unordered(event["spans"])} for event in found]


def normal_events(client: Client, endpoint: str) -> list[dict[str, Any]]:
    rid = new_id()
    assert client.request(ENDPOINTS[endpoint].format(rid=rid)).status_code == 200
    assert client.done(rid)["raised"] is None
    return comparable(events(client, rid))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("spans", SPANS)
def test_a_normal_request_gives_the_same_transaction(
    start: Start, spans: str, endpoint: str
) -> None:
    with_plugin = normal_events(Client(start(KIND, f"{spans}app")), endpoint)
    without = normal_events(Client(start(KIND, f"{spans}plain")), endpoint)
    assert with_plugin == without
    assert [event["type"] for event in with_plugin] == ["transaction"]


def transaction(found: list[dict[str, Any]]) -> works_with.Transaction:
    (event,) = (event for event in found if event["type"] == "transaction")
    errors = sum(1 for event in found if event["type"] != "transaction")
    return (event["status"], event["http_status"], errors)


@pytest.mark.parametrize("abort", ABORTS)
@pytest.mark.parametrize("plugin", ["app", "plain"])
@pytest.mark.parametrize("spans", SPANS)
def test_a_client_that_leaves_sends_no_error(
    start: Start, spans: str, plugin: str, abort: str
) -> None:
    client = Client(start(KIND, f"{spans}{plugin}"))
    rid = new_id()
    assert leave_mid_request(client, abort, rid)["raised"] is None
    found = events(client, rid)
    table = works_with.SENTRY["plugin" if plugin == "app" else "plain"]
    assert transaction(found) == table[abort]
    (event,) = found
    assert event["transaction"] == ABORTS[abort]
    if plugin == "app":
        lines = client.wait(rid, "logged")["log_lines"]
        assert_quiet_line(client.served, ABORTS[abort].format(rid=rid), lines)


def middleware_span_statuses(client: Client) -> set[str | None]:
    rid = new_id()
    leave_mid_request(client, "def-stream", rid)
    (event,) = events(client, rid)
    return {status for op, _, status in event["spans"] if op == "middleware.starlette"}


def test_a_def_stream_abort_leaves_the_middleware_spans_alone(start: Start) -> None:
    assert middleware_span_statuses(Client(start(KIND, "spans_app"))) == {None}


def test_a_def_stream_abort_without_the_plugin_has_no_span_status(start: Start) -> None:
    assert middleware_span_statuses(Client(start(KIND, "spans_plain"))) == {None}
