"""The kit's server side (``_exchange``): ``receive`` and ``send`` as uvicorn behaves."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort.testing import (
    Leave,
    leave_on_response_start,
)
from fastapi_abort.testing._client import (
    CONTENT_AND_JSON,
)
from fastapi_abort.testing._exchange import (
    AFTER_COMPLETE,
    EXPECTED_BODY,
    EXPECTED_START,
)
from tests.support import (
    exactly,
    raw_client,
    respond,
    three_messages_read,
    token_of,
)

pytestmark = pytest.mark.anyio


# -- the server: uvicorn's receive and send ----------------------------------------------------


async def test_receive_after_the_leave_returns_disconnect_forever() -> None:
    leave = Leave()
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        leave.now()
        received.extend([await receive() for _ in range(3)])
        await respond(send)

    async with raw_client(app) as client:
        await client.get("/", leave=leave)
    assert received == [
        {"type": "http.request", "body": b"", "more_body": False},
        *[{"type": "http.disconnect"}] * 3,
    ]


async def test_receive_blocks_after_the_body_until_the_response_is_complete() -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: read_into(received, receive))
            await anyio.wait_all_tasks_blocked()
            assert len(received) == 1  # still waiting: the client is there
            await respond(send)

    async with raw_client(app) as client:
        outcome = await client.get("/")
    assert received[1] == {"type": "http.disconnect"}
    assert not outcome.client_left


async def read_into(messages: list[Message], receive: Receive) -> None:
    messages.append(await receive())


async def test_a_sync_iterable_body_is_one_message_per_chunk_then_an_empty_last_one() -> None:
    def upload() -> Iterator[bytes]:
        yield b"a"
        yield b""  # never delivered on its own
        yield b"b"

    assert await three_messages_read(upload()) == [
        (b"a", True),
        (b"b", True),
        (b"", False),
    ]


async def test_the_scope_is_built_from_the_request() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(dict(scope))
        await respond(send)

    async with raw_client(app) as client:
        await client.post(
            "/caf%C3%A9?a=1", params={"b": "2 3"}, headers={"X-Test": "yes"}, json={"n": 1}
        )
    (scope,) = scopes
    assert scope["method"] == "POST"
    assert scope["path"] == "/café"
    assert scope["raw_path"] == b"/caf%C3%A9"
    assert scope["query_string"] == b"a=1&b=2+3"
    assert scope["headers"] == [
        (b"host", b"testserver"),
        (b"x-test", b"yes"),
        (b"content-length", b"8"),
        (b"content-type", b"application/json"),
    ]
    assert scope["asgi"]["spec_version"] == "2.3"


async def test_a_host_header_given_is_sent_instead_of_testserver() -> None:
    hosts: list[list[bytes]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        hosts.append([value for name, value in scope["headers"] if name == b"host"])
        await respond(send)

    async with raw_client(app) as client:
        await client.get("/", headers=[("Host", "api.example.org")])
    assert hosts == [[b"api.example.org"]]


async def test_json_and_content_together_are_refused() -> None:
    async with raw_client(lambda scope, receive, send: respond(send)) as client:
        with pytest.raises(ValueError, match=exactly(CONTENT_AND_JSON)):
            await client.post("/", content=b"x", json={})


START: Message = {"type": "http.response.start", "status": 200, "headers": []}
LAST: Message = {"type": "http.response.body", "body": b"", "more_body": False}


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        (
            [{"type": "http.response.trailers", "headers": [], "more_trailers": False}],
            EXPECTED_START.format(type="http.response.trailers"),
        ),
        ([LAST], EXPECTED_START.format(type="http.response.body")),
        ([START, START], EXPECTED_BODY.format(type="http.response.start")),
        ([START, LAST, LAST], AFTER_COMPLETE.format(type="http.response.body")),
    ],
)
async def test_messages_out_of_order_fail_as_on_uvicorn(
    messages: list[Message], error: str
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            await send(message)

    async with raw_client(app) as client:
        with pytest.raises(RuntimeError, match=exactly(error)):
            await client.get("/")


async def test_after_the_client_left_any_message_is_taken_quietly_as_on_uvicorn() -> None:
    start_again: Message = {"type": "http.response.start", "status": 500, "headers": []}
    trailers: Message = {"type": "http.response.trailers", "headers": [], "more_trailers": False}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-n", b"1")]})
        # Out of order, but the connection is gone: nobody is there to refuse them.
        await send(start_again)
        await send(trailers)

    async with raw_client(app) as client:
        outcome = await client.get("/", leave=leave_on_response_start())
    assert outcome.status == 200
    assert outcome.headers["x-n"] == "1"
    assert outcome.messages[1:] == (start_again, trailers)
    assert outcome.chunks == ()
    assert not outcome.response_complete


async def test_an_app_that_returns_without_a_response_has_no_status() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async with raw_client(app) as client:
        outcome = await client.get("/")
    assert outcome.status is None
    assert outcome.messages == ()
    assert not outcome.response_complete


async def test_a_client_that_leaves_after_the_response_trips_nothing() -> None:
    leave = Leave()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        await respond(send)
        leave.now()  # while the app still runs: a background task, say
        assert (await receive())["type"] == "http.disconnect"
        assert not token.is_cancellation_requested

    async with raw_client(app) as client:
        outcome = await client.get("/", leave=leave)
    assert outcome.client_left
    assert not outcome.client_left_before_completion
    assert not outcome.token_tripped
    assert outcome.aborted_log is None
