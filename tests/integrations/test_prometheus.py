"""prometheus-fastapi-instrumentator and starlette-exporter with fastapi-abort.

``tests.integrations.apps.prometheus_app`` serves each library without the plugin and with it
(``install(app)`` after the library's setup; ``install`` puts its middleware outside every other
whatever the order), under uvicorn. The test scrapes ``/metrics`` before and after one request
and takes the increments of the library's request counter: the same for a normal request with
and without the plugin; for a client that leaves, as :mod:`tests.integrations.works_with` says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integrations import works_with
from tests.integrations.support import ABORTS, ENDPOINTS, Client, leave_mid_request
from tests.integrations.twin_servers import Start, assert_quiet_line, twin_servers
from tests.raw_http import new_id

pytestmark = pytest.mark.server

MODULE = "tests.integrations.apps.prometheus_app"
KIND = "uvicorn-h11"
#: Per library: its request counter, the label that holds the route, the one that holds the
#: status, and what the tests expect for an abort.
LIBRARIES = {
    "instrumentator": (
        "http_requests",
        "handler",
        "status",
        works_with.PROMETHEUS_INSTRUMENTATOR,
    ),
    "exporter": ("starlette_requests", "path", "status_code", works_with.STARLETTE_EXPORTER),
}


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    with twin_servers(MODULE, tmp_path_factory.mktemp("prometheus")) as start:
        yield start


def counts(client: Client, library: str, route: str) -> Counter[str]:
    """The library's request counter for ``route``, by status label, scraped from /metrics."""
    counter, route_label, status_label, _ = LIBRARIES[library]
    text = httpx.get(f"{client.base}/metrics", timeout=30).text
    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != counter:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels[route_label] == route:
                found[sample.labels[status_label]] += int(sample.value)
    return found


def increments(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {label: n for label, n in (after - before).items() if n}


def normal_increments(client: Client, library: str, endpoint: str) -> dict[str, int]:
    path = ENDPOINTS[endpoint]
    route = path.split("?")[0]
    before = counts(client, library, route)
    rid = new_id()
    assert client.request(path.format(rid=rid)).status_code == 200
    assert client.done(rid)["raised"] is None
    return increments(before, counts(client, library, route))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("library", LIBRARIES)
def test_a_normal_request_counts_the_same(start: Start, library: str, endpoint: str) -> None:
    with_plugin = normal_increments(Client(start(KIND, f"{library}_app")), library, endpoint)
    without = normal_increments(Client(start(KIND, f"{library}_plain")), library, endpoint)
    assert with_plugin == without
    assert sum(with_plugin.values()) == 1


def abort_params() -> list[Any]:
    params = []
    for library in LIBRARIES:
        for plugin in ("app", "plain"):
            for abort in ABORTS:
                params.append(pytest.param(library, plugin, abort))
    return params


@pytest.mark.parametrize(("library", "plugin", "abort"), abort_params())
def test_a_client_that_leaves_is_counted(
    start: Start, library: str, plugin: str, abort: str
) -> None:
    client = Client(start(KIND, f"{library}_{plugin}"))
    route = ABORTS[abort]
    before = counts(client, library, route)
    rid = new_id()
    assert leave_mid_request(client, abort, rid)["raised"] is None
    found = increments(before, counts(client, library, route))
    expected = LIBRARIES[library][3]["plain" if plugin == "plain" else "plugin"][abort]
    assert found == expected
    if plugin == "app":
        lines = client.wait(rid, "logged")["log_lines"]
        assert_quiet_line(client.served, route.format(rid=rid), lines)
