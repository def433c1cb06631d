"""The abort record's edge cases (scripted servers): what is counted, what is not, the log
record's fields. Real servers: tests/servers/test_abort_record.py."""

from __future__ import annotations

import logging

import anyio
import pytest
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    AbortedRequest,
    CancellationReason,
    OperationCancelled,
    RequestAbortedMiddleware,
)
from fastapi_abort._state import SCOPE_KEY
from tests.scripted import ScriptedServer, http_scope
from tests.support import WAIT

pytestmark = pytest.mark.anyio

FIELDS = ("response_started", "status_sent", "body_bytes", "body_messages", "first_byte_after")


async def test_only_byte_bodies_are_counted_and_the_rest_is_left_to_the_server() -> None:
    records: list[AbortedRequest] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": "text", "more_body": True})
        await send({"type": "http.response.body", "more_body": True})
        await send({"type": "http.response.body", "body": bytearray(b"abc"), "more_body": True})
        server.disconnect()
        assert (await receive())["type"] == "http.disconnect"

    server = ScriptedServer()
    with anyio.fail_after(WAIT):
        await RequestAbortedMiddleware(app, on_abort=records.append)(
            http_scope(), server.receive, server.send
        )
    (record,) = records
    assert (record.response_started, record.status_sent) == (True, 201)
    assert (record.body_messages, record.body_bytes) == (3, 3)
    assert record.first_byte_after is not None
    assert 0 < record.first_byte_after <= record.elapsed


async def test_the_deadlines_504_is_not_counted_as_the_apps_and_the_log_record_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records: list[AbortedRequest] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await scope[SCOPE_KEY].token().sleep(30)

    server = ScriptedServer()
    middleware = RequestAbortedMiddleware(app, deadline=0.01, on_abort=records.append)
    with caplog.at_level(logging.WARNING, "fastapi_abort"), anyio.fail_after(WAIT):
        await middleware(http_scope(), server.receive, server.send)
    assert server.status() == 504
    (record,) = records
    assert (record.status_code, record.reason) == (504, CancellationReason.DEADLINE)
    assert [getattr(record, name) for name in FIELDS] == [False, None, 0, 0, None]
    (log,) = caplog.records
    assert [log.__dict__[name] for name in FIELDS] == [False, None, 0, 0, None]
    assert (log.__dict__["status_code"], log.__dict__["reason"]) == (504, "deadline")


async def test_the_quiet_lines_record_carries_what_was_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = scope[SCOPE_KEY].token()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        server.disconnect()
        with pytest.raises(OperationCancelled):
            await token.sleep(30)

    server = ScriptedServer()
    with caplog.at_level(logging.INFO, "fastapi_abort"), anyio.fail_after(WAIT):
        await RequestAbortedMiddleware(app, watcher_delay=0)(
            http_scope(), server.receive, server.send
        )
    (log,) = caplog.records
    assert [log.__dict__[name] for name in FIELDS[:4]] == [True, 200, 5, 1]
    assert 0 < log.__dict__["first_byte_after"] <= log.__dict__["elapsed"]
