"""asgi-correlation-id with fastapi-abort: its id on the ``fastapi_abort`` logger's 499 record.

``tests.integrations.apps.correlation_app`` adds ``CorrelationIdMiddleware`` and puts its
``CorrelationIdFilter`` on a handler of the ``fastapi_abort`` logger; fastapi-abort's middleware
is outside the correlation middleware, and logs after the app (the correlation middleware
included) is done, yet the record carries the request's id, for every way of leaving (a
stream's too: its line says 499 although the response had started with 200). A normal
request answers the same ``X-Request-ID`` with and without the plugin.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.integrations.support import ABORTS, Client
from tests.integrations.twin_servers import Start, twin_servers
from tests.raw_http import new_id

pytestmark = pytest.mark.server

MODULE = "tests.integrations.apps.correlation_app"
KIND = "uvicorn-h11"
HEADER = "X-Request-ID"


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    with twin_servers(MODULE, tmp_path_factory.mktemp("correlation")) as start:
        yield start


@pytest.mark.parametrize("variant", ["app", "plain"])
def test_a_normal_request_answers_its_id(start: Start, variant: str) -> None:
    client = Client(start(KIND, variant))
    given = uuid.uuid4().hex
    response = client.request(f"/ok/{new_id()}", headers={HEADER: given})
    assert response.status_code == 200
    assert response.headers[HEADER] == given


@pytest.mark.parametrize("abort", ABORTS)
def test_the_quiet_line_carries_the_correlation_id(start: Start, abort: str) -> None:
    client = Client(start(KIND, "app"))
    rid, given = new_id(), uuid.uuid4().hex
    path = ABORTS[abort].format(rid=rid)
    client.leave_mid_request(path, rid, headers=((HEADER, given),))
    client.wait(rid, "logged")
    (record,) = client.collected(rid)
    assert record["message"].startswith(f"GET {path}: 499 Client Closed Request after ")
    assert record["correlation_id"] == given
