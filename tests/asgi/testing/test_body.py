"""The request body as the kit's client sends it (``_body``): cut by ``leave_mid_upload``, and a
read waiting for its next chunk when the client leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort.testing import (
    Leave,
    leave_mid_upload,
)
from tests.support import (
    raw_client,
    read_until_disconnect,
    respond,
    three_messages_read,
    token_of,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"x" * 5000, [(b"x" * 1000, True)]),
        ([b"a" * 600] * 5, [(b"a" * 600, True), (b"a" * 400, True)]),
        ([b"a" * 500] * 5, [(b"a" * 500, True), (b"a" * 500, True)]),
    ],
)
async def test_leave_mid_upload_cuts_the_body_there_then_disconnects(
    content: Any, expected: list[tuple[bytes, bool]]
) -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.extend(await read_until_disconnect(receive))
        await respond(send)

    async with raw_client(app) as client:
        outcome = await client.post("/", content=content, leave=leave_mid_upload(1000))
    body = [{"type": "http.request", "body": b, "more_body": more} for b, more in expected]
    assert received == [*body, {"type": "http.disconnect"}]
    assert outcome.request_body_read == 1000
    assert outcome.client_left_before_completion


async def test_leave_mid_upload_of_an_async_upload() -> None:
    async def upload() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"a" * 600

    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token_of(scope)  # the watcher reads ahead of the app: one message at most
        received.extend(await read_until_disconnect(receive))
        await respond(send)

    async with raw_client(app) as client:
        outcome = await client.post("/", content=upload(), leave=leave_mid_upload(1000))
    assert [len(m.get("body", b"")) for m in received] == [600, 400, 0]
    assert outcome.token_tripped
    assert outcome.request_body_read == 1000


async def test_leave_mid_upload_of_a_shorter_body_leaves_after_its_last_byte() -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        received.extend(await read_until_disconnect(receive))
        assert token.is_cancellation_requested
        await respond(send)

    async with raw_client(app) as client:
        outcome = await client.post("/", content=b"short", leave=leave_mid_upload(1000))
    assert received == [
        {"type": "http.request", "body": b"short", "more_body": False},
        {"type": "http.disconnect"},
    ]
    assert outcome.token_tripped


async def test_leave_mid_upload_at_zero_bytes_leaves_at_the_first_read() -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.extend(await read_until_disconnect(receive))
        await respond(send)

    async with raw_client(app) as client:
        outcome = await client.post("/", content=b"body", leave=leave_mid_upload(0))
    assert received == [{"type": "http.disconnect"}]
    assert outcome.request_body_read == 0


async def test_leave_mid_upload_never_fires_if_nobody_reads_the_body() -> None:
    async with raw_client(lambda scope, receive, send: respond(send)) as client:
        outcome = await client.post("/", content=b"x" * 5000, leave=leave_mid_upload(10))
    assert not outcome.client_left
    assert outcome.request_body_read == 0
    assert outcome.status == 200


async def test_a_read_waiting_for_the_next_chunk_gets_the_disconnect_when_the_client_leaves() -> (
    None
):
    # The client leaves while the app's receive() waits for a chunk the upload has not pulled:
    # that very call returns the disconnect.
    never = anyio.Event()

    async def upload() -> AsyncIterator[bytes]:
        yield b"first"
        await never.wait()
        yield b"never sent"

    leave = Leave()
    received: list[Message] = []

    async def leave_once_all_wait() -> None:
        await anyio.wait_all_tasks_blocked()
        leave.now()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(leave_once_all_wait)
            received.append(await receive())
        await respond(send)

    async with raw_client(app) as client:
        await client.post("/", content=upload(), leave=leave)
    assert received == [
        {"type": "http.request", "body": b"first", "more_body": True},
        {"type": "http.disconnect"},
    ]


async def test_an_upload_waiting_for_its_next_chunk_is_cancelled_when_the_client_leaves() -> None:
    closed = anyio.Event()
    never = anyio.Event()

    async def upload() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await never.wait()
            yield b"never sent"
        finally:
            closed.set()

    leave = Leave()
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        leave.now()
        received.append(await receive())
        await respond(send)

    async with raw_client(app) as client:
        await client.post("/", content=upload(), leave=leave)
    assert received == [
        {"type": "http.request", "body": b"first", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert closed.is_set()


async def test_a_receive_cancelled_while_a_chunk_is_on_its_way_loses_nothing() -> None:
    sent = anyio.Event()

    async def upload() -> AsyncIterator[bytes]:
        await sent.wait()
        yield b"first"
        yield b"second"

    async def peek(receive: Receive) -> None:
        with anyio.CancelScope() as scope:  # what Request.is_disconnected() does
            scope.cancel()
            await receive()
        sent.set()

    assert await three_messages_read(upload(), before=peek) == [
        (b"first", True),
        (b"second", True),
        (b"", False),
    ]


async def test_an_upload_the_app_stopped_reading_is_closed_with_the_request() -> None:
    closed = anyio.Event()

    async def upload() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"chunk"
        finally:
            closed.set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await respond(send)

    async with raw_client(app) as client:
        await client.post("/", content=upload())
    assert closed.is_set()
