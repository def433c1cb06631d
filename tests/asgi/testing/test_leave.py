"""The triggers (``fastapi_abort.testing._leave``): each leaves when the app does what it waits
for, serves one request, and refuses bad arguments with a clear message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import (
    RequestAborted,
    install,
)
from fastapi_abort.testing import (
    AbortingClient,
    Leave,
    leave_after,
    leave_after_chunks,
    leave_mid_upload,
    leave_on_response_start,
    leave_when,
)
from fastapi_abort.testing._leave import BAD_BYTES, BAD_CHUNKS, BAD_SECONDS, LEAVE_REUSED
from tests.support import (
    exactly,
    raw_client,
    read_until_disconnect,
    respond,
    token_of,
)

pytestmark = pytest.mark.anyio


# -- the triggers ------------------------------------------------------------------------------


async def test_leave_on_response_start_leaves_right_after_the_status_line() -> None:
    leave = leave_on_response_start()
    seen: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        seen.append(leave.left)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen.append(leave.left)
        await token.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    async with raw_client(app) as client:
        outcome = await client.get("/", leave=leave)
    assert seen == [False, True]
    assert outcome.token_tripped
    assert outcome.status == 200
    assert outcome.chunks == (b"late",)  # recorded, though nobody was there to read it
    assert outcome.client_left_before_completion


async def test_leave_after_chunks_leaves_on_the_nth_body_message() -> None:
    leave = leave_after_chunks(3)
    seen: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(5):
            await send({"type": "http.response.body", "body": b"%d" % n, "more_body": True})
            seen.append(leave.left)
        await token.wait()

    async with raw_client(app) as client:
        outcome = await client.get("/", leave=leave)
    assert seen == [False, False, True, True, True]
    assert outcome.chunks == (b"0", b"1", b"2", b"3", b"4")
    assert outcome.token_tripped
    assert not outcome.response_complete


async def test_leave_after_the_last_chunk_is_no_abort() -> None:
    async with raw_client(lambda scope, receive, send: respond(send)) as client:
        outcome = await client.get("/", leave=leave_after_chunks(1))
    assert outcome.client_left
    assert not outcome.client_left_before_completion
    assert outcome.response_complete
    assert outcome.aborted_log is None


async def test_a_manual_leave_from_a_test_task_trips_the_token() -> None:
    app = FastAPI()
    install(app)
    running = anyio.Event()

    @app.get("/report")
    async def report(ct: RequestAborted) -> None:
        running.set()
        await ct.wait()
        ct.throw_if_cancellation_requested()

    leave = Leave()

    async def leave_once_running() -> None:
        with anyio.fail_after(5):
            await running.wait()
        leave.now()

    async with AbortingClient(app) as client, anyio.create_task_group() as tg:
        tg.start_soon(leave_once_running)
        outcome = await client.get("/report", leave=leave)
    assert outcome.token_tripped
    assert outcome.status == 499


async def test_leave_when_leaves_as_the_endpoint_sets_the_event() -> None:
    app = FastAPI()
    install(app)
    reached = anyio.Event()
    seen: list[bool] = []

    @app.get("/report")
    async def report(ct: RequestAborted) -> None:
        seen.append(ct.is_cancellation_requested)
        reached.set()
        await ct.wait()
        seen.append(ct.is_cancellation_requested)
        ct.throw_if_cancellation_requested()

    async with AbortingClient(app) as client:
        outcome = await client.get("/report", leave=leave_when(reached))
    assert seen == [False, True]
    assert outcome.token_tripped
    assert outcome.status == 499


async def test_leave_when_an_event_already_set_leaves_at_once() -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.extend(await read_until_disconnect(receive))
        await respond(send)

    gone = anyio.Event()
    gone.set()
    async with raw_client(app) as client:
        outcome = await client.get("/", leave=leave_when(gone))
    assert outcome.client_left_before_completion
    assert received == [{"type": "http.disconnect"}]


async def test_a_leave_made_before_the_request_means_the_client_is_gone_from_the_start() -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.extend(await read_until_disconnect(receive))
        await respond(send)

    leave = Leave()
    leave.now()
    async with raw_client(app) as client:
        outcome = await client.post("/", content=b"body", leave=leave)
    assert received == [{"type": "http.disconnect"}]
    assert outcome.left_after is not None
    assert outcome.client_left_before_completion
    assert outcome.request_body_read == 0


async def test_a_leave_serves_one_request_and_does_nothing_after_it() -> None:
    leave = Leave()
    async with raw_client(lambda scope, receive, send: respond(send)) as client:
        await client.get("/", leave=leave)
        leave.now()
        assert not leave.left
        with pytest.raises(RuntimeError) as caught:
            await client.get("/", leave=leave)
    assert str(caught.value) == LEAVE_REUSED.format(leave=leave)


@pytest.mark.parametrize(
    ("factory", "value", "message"),
    [
        (leave_after, -1, BAD_SECONDS),
        (leave_after, float("nan"), BAD_SECONDS),
        (leave_after, float("inf"), BAD_SECONDS),
        (leave_after, True, BAD_SECONDS),
        (leave_after_chunks, 0, BAD_CHUNKS),
        (leave_after_chunks, 1.5, BAD_CHUNKS),
        (leave_mid_upload, -1, BAD_BYTES),
        (leave_mid_upload, "10", BAD_BYTES),
    ],
)
def test_bad_trigger_arguments_are_refused_with_a_clear_message(
    factory: Callable[[Any], Leave], value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=exactly(message.format(value=value))):
        factory(value)


def test_triggers_show_how_they_were_made() -> None:
    assert repr(leave_after(0.5)) == "leave_after(0.5)"
    assert repr(leave_on_response_start()) == "leave_on_response_start()"
    assert repr(leave_after_chunks(3)) == "leave_after_chunks(3)"
    assert repr(leave_mid_upload(10)) == "leave_mid_upload(after_bytes=10)"
    assert repr(leave_when(anyio.Event())) == "leave_when(event)"
    assert repr(Leave()) == "Leave()"
