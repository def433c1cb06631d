"""Isolation on real servers: each request sees its own token only, and its 499 line tells no
secrets.

The app is ``tests.chaos.isolation`` (see there for who records which token, and why the token
objects are kept alive until they are compared).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.client import Connection, control
from tests.chaos.isolation import CONSUMERS
from tests.chaos.logs import summarise
from tests.chaos.serve import running
from tests.serve import KINDS, Served

pytestmark = pytest.mark.server

CONCURRENT = 1000
SECRET_REQUESTS = 20


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    log: Path = tmp_path_factory.mktemp(request.param) / "server.log"
    with running(request.param, "tests.chaos.isolation:app", log) as srv:
        yield srv
    # Nothing at ERROR from any logger, in the whole life of the server.
    assert summarise(srv.output()).errors == [], srv.output()


async def _fetch(port: int, rid: str, sync: bool) -> bytes:
    conn = await Connection.open(port)
    try:
        await conn.send(
            f"GET /i/{rid}?n={CONCURRENT}&sync={sync} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        status, headers = await conn.head()
        body = await conn.body(headers)
        assert status == 200, body
        return body
    finally:
        conn.close()


async def _collect_concurrently(port: int) -> tuple[list[bytes], dict[str, Any]]:
    rids = [f"iso{index:04d}" for index in range(CONCURRENT)]
    bodies = await asyncio.wait_for(
        asyncio.gather(*(_fetch(port, rid, index % 2 == 1) for index, rid in enumerate(rids))),
        timeout=90,
    )
    return bodies, await control(port, "/_ctl/isolation")


@pytest.mark.timeout(120)
def test_each_of_1000_concurrent_requests_sees_only_its_own_token(server: Served) -> None:
    bodies, result = asyncio.run(_collect_concurrently(server.port))
    # Each response is its own request's.
    assert bodies == [f"iso{index:04d}".encode() for index in range(CONCURRENT)]
    assert result == {
        "requests": CONCURRENT,
        # Every consumer of a request was handed the same object ...
        "one_token_each": CONCURRENT,
        # ... and no two requests share one: all were alive at once, so ids do not repeat.
        "distinct_tokens": CONCURRENT,
        "shared": 0,
        "incomplete": [],
        "consumers": {consumer: CONCURRENT for consumer in CONSUMERS},
        # Every request waited in the endpoint until all had arrived: all were in flight at once.
        "barrier_timeouts": 0,
        "arrived": CONCURRENT,
    }


def _secret_request(rid: str, secrets: dict[str, str]) -> bytes:
    body = f'{{"password": "{secrets["body"]}"}}'.encode()
    head = (
        f"POST /i/secret/{rid}?api_key={secrets['query']} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {secrets['header']}\r\n"
        f"X-Api-Key: {secrets['header']}\r\n"
        f"Cookie: session={secrets['cookie']}\r\n"
        f"Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _leave_with_secrets(port: int, rid: str, secrets: dict[str, str], reset: bool) -> None:
    conn = await Connection.open(port)
    try:
        await conn.send(_secret_request(rid, secrets))
        answer = await control(port, f"/_ctl/await/{rid}")
        assert answer["started"], rid
    finally:
        conn.close(reset)


async def _abort_all(port: int, secrets: dict[str, str]) -> dict[str, Any]:
    rids = [f"sec{index:02d}" for index in range(SECRET_REQUESTS)]
    await asyncio.wait_for(
        asyncio.gather(
            *(
                _leave_with_secrets(port, rid, secrets, index % 2 == 1)
                for index, rid in enumerate(rids)
            )
        ),
        timeout=60,
    )
    answer: dict[str, Any] = await control(port, "/_ctl/drain?wait=30")
    return answer


def test_the_499_line_carries_no_query_header_cookie_or_body(server: Served) -> None:
    secrets = {
        part: f"{part}5ecret{uuid.uuid4().hex}" for part in ("query", "header", "cookie", "body")
    }
    answer = asyncio.run(_abort_all(server.port, secrets))
    assert answer["running"] == []
    records = {record["rid"]: record for record in answer["finished"]}
    assert sorted(records) == [f"sec{index:02d}" for index in range(SECRET_REQUESTS)]
    assert all(record["tripped"] for record in records.values()), records
    output = server.output()
    # One 499 line per request, in the library's format (method, path, status, words, time).
    lines = summarise(output, prefix="/i/secret/")
    assert lines.aborted == Counter(dict.fromkeys(records, 1)), output
    assert lines.foreign_aborted == [], output
    for part, secret in secrets.items():
        assert secret not in output, part
