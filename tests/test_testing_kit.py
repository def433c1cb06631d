"""The testing kit itself (fastapi_abort.testing), on asyncio and trio.

Raw ASGI apps behind the middleware pin what the kit's server does (uvicorn's receive and send);
small FastAPI apps pin what it reports (the token, the status, the quiet line). Every trigger
but leave_after() fires on what the app does, so the tests wait on nothing but events.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from fastapi import FastAPI, Request
from starlette.requests import HTTPConnection
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    RequestAborted,
    RequestAbortedMiddleware,
    get_request_aborted,
    install,
)
from fastapi_abort._endings import DEADLINE_LOG
from fastapi_abort.testing import (
    AbortingClient,
    Leave,
    RequestOutcome,
    leave_after,
    leave_after_chunks,
    leave_mid_upload,
    leave_on_response_start,
    leave_when,
)
from fastapi_abort.testing._client import (
    BAD_TIMEOUT,
    CONTENT_AND_JSON,
    MIDDLEWARE_MISSING,
    NOT_OPEN,
)
from fastapi_abort.testing._exchange import (
    AFTER_COMPLETE,
    CLIENT_LEFT,
    CLIENT_THERE,
    EXPECTED_BODY,
    EXPECTED_START,
    NO_RESPONSE,
    NOT_READING,
    READING,
    RESPONSE_COMPLETE,
    RESPONSE_STARTED,
    TIMED_OUT,
)
from fastapi_abort.testing._leave import BAD_BYTES, BAD_CHUNKS, BAD_SECONDS, LEAVE_REUSED
from fastapi_abort.testing._lifespan import LIFESPAN_FAILED, LIFESPAN_TIMED_OUT, NOT_LIFESPAN

pytestmark = pytest.mark.anyio

RawApp = Callable[[Scope, Receive, Send], Awaitable[None]]
QUIET_LINE = re.compile(r"GET /slow: 499 Client Closed Request after \d+\.\d{3} s")


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def token_of(scope: Scope) -> CancellationToken:
    return get_request_aborted(HTTPConnection(scope))


def watched(app: RawApp) -> RequestAbortedMiddleware:
    """The middleware with a watcher that starts at once."""
    return RequestAbortedMiddleware(app, watcher_delay=0)


def raw_client(app: RawApp, **options: Any) -> AbortingClient:
    return AbortingClient(watched(app), lifespan=False, **options)


async def respond(send: Send, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_until_disconnect(receive: Receive) -> list[Message]:
    messages = [await receive()]
    while messages[-1]["type"] != "http.disconnect":
        messages.append(await receive())
    return messages


async def nothing(receive: Receive) -> None:
    pass


async def three_messages_read(
    content: Any, before: Callable[[Receive], Awaitable[None]] = nothing
) -> list[tuple[bytes, bool]]:
    """POST ``content`` to an app that calls ``before``, then reads three messages."""
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await before(receive)
        received.extend([await receive() for _ in range(3)])
        await respond(send)

    async with raw_client(app) as client:
        await client.post("/", content=content)
    return [(m["body"], m["more_body"]) for m in received]


def slow_app(deadline: float | None = None) -> FastAPI:
    """/slow waits for its token; /quick answers at once."""
    app = FastAPI()
    install(app, deadline=deadline)

    @app.get("/slow")
    async def slow(ct: RequestAborted) -> str:
        await ct.wait()
        ct.throw_if_cancellation_requested()
        return "never sent"

    @app.get("/quick")
    async def quick(ct: RequestAborted) -> str:
        return "quick"

    return app


@pytest.fixture
def abort_logger() -> Iterator[logging.Logger]:
    """The ``fastapi_abort`` logger, its level put back after the test."""
    logger = logging.getLogger("fastapi_abort")
    level = logger.level
    yield logger
    logger.setLevel(level)


# -- what the client reports -------------------------------------------------------------------


async def test_a_client_that_stays_gets_the_response_and_nothing_trips() -> None:
    async with AbortingClient(slow_app()) as client:
        outcome = await client.get("/quick")
    assert outcome.status == 200
    assert outcome.body == b'"quick"'
    assert outcome.headers["content-type"] == "application/json"
    assert outcome.response_complete
    assert not outcome.client_left
    assert not outcome.client_left_before_completion
    assert outcome.left_after is None
    assert outcome.token is not None
    assert not outcome.token.can_be_cancelled  # final: the response is complete
    assert not outcome.token_tripped
    assert outcome.reason is None
    assert outcome.aborted_log is None
    assert outcome.exception is None
    assert outcome.request == "GET /quick"


async def test_leaving_after_a_delay_trips_the_token_and_ends_with_the_quiet_499() -> None:
    async with AbortingClient(slow_app()) as client:
        outcome = await client.get("/slow", leave=leave_after(0.05))
    assert outcome.client_left
    assert outcome.client_left_before_completion
    assert outcome.left_after is not None
    assert outcome.token_tripped
    assert outcome.reason is CancellationReason.CLIENT_DISCONNECTED
    assert outcome.status == 499
    assert outcome.body == b""
    assert outcome.aborted_log is not None
    assert QUIET_LINE.fullmatch(outcome.aborted_log.getMessage())
    assert outcome.aborted_log.levelno == logging.INFO


async def test_a_client_that_leaves_unnoticed_is_reported_as_left_but_not_tripped() -> None:
    leave = Leave()
    responding = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Never asks for its token, never reads: nothing in the app can notice.
        leave.now()
        await responding.wait()
        await respond(send)

    async def let_it_respond() -> None:
        responding.set()

    async with raw_client(app) as client, anyio.create_task_group() as tg:
        tg.start_soon(let_it_respond)
        outcome = await client.get("/", leave=leave)
    assert outcome.client_left_before_completion
    assert outcome.token is None
    assert not outcome.token_tripped
    assert outcome.aborted_log is None
    assert outcome.status == 200


async def test_the_quiet_line_is_captured_but_not_shown_where_logging_would_not_show_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with AbortingClient(slow_app()) as client:
        outcome = await client.get("/slow", leave=leave_after(0))
    assert outcome.aborted_log is not None
    assert caplog.records == []
    logger = logging.getLogger("fastapi_abort")
    assert logger.level == logging.NOTSET
    assert logger.filters == []


async def test_the_quiet_line_still_reaches_handlers_that_would_see_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with AbortingClient(slow_app()) as client:
        outcome = await client.get("/slow", leave=leave_after(0))
    assert [record.getMessage() for record in caplog.records] == [
        outcome.aborted_log.getMessage() if outcome.aborted_log else None
    ]


async def test_a_level_on_the_fastapi_abort_logger_hides_the_line_from_handlers_only(
    abort_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the root logger would show INFO...
    abort_logger.setLevel(logging.WARNING)  # ...but the app's own logger does not
    async with AbortingClient(slow_app()) as client:
        outcome = await client.get("/slow", leave=leave_after(0))
    assert outcome.aborted_log is not None
    assert caplog.records == []
    assert abort_logger.level == logging.WARNING


async def test_a_level_the_app_sets_on_the_logger_while_a_request_runs_is_kept(
    abort_logger: logging.Logger,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        abort_logger.setLevel(logging.ERROR)  # a logging.config call, say
        await respond(send)

    async with raw_client(app) as client:
        await client.get("/")
    assert abort_logger.level == logging.ERROR
    assert abort_logger.filters == []


async def test_a_deadline_warning_is_not_taken_for_the_quiet_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with AbortingClient(slow_app(deadline=0.01)) as client:
        outcome = await client.get("/slow")
    assert outcome.status == 504
    assert outcome.reason is CancellationReason.DEADLINE
    assert outcome.aborted_log is None
    assert [record.msg for record in caplog.records] == [DEADLINE_LOG]


async def test_concurrent_requests_each_get_their_own_quiet_line() -> None:
    app = FastAPI()
    install(app)
    outcomes: dict[str, RequestOutcome] = {}

    @app.get("/wait/{name}")
    async def wait(name: str, ct: RequestAborted) -> None:
        await ct.wait()

    async with AbortingClient(app) as client:

        async def run(name: str, leave: Leave) -> None:
            outcomes[name] = await client.get(f"/wait/{name}", leave=leave)

        first, second = Leave(), Leave()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "first", first)
            tg.start_soon(run, "second", second)
            await anyio.wait_all_tasks_blocked()
            second.now()
            await anyio.wait_all_tasks_blocked()
            first.now()
    for name, outcome in outcomes.items():
        assert outcome.aborted_log is not None
        assert outcome.aborted_log.getMessage().startswith(f"GET /wait/{name}: 499 ")


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


# -- errors, bounds and the lifespan -----------------------------------------------------------


async def test_without_the_middleware_the_kit_says_how_to_fix_it() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint() -> str:
        return "unprotected"

    async with AbortingClient(app) as client:
        with pytest.raises(RuntimeError) as caught:
            await client.get("/?q=1")
    assert str(caught.value) == MIDDLEWARE_MISSING.format(request="GET /?q=1")


async def test_an_app_that_never_responds_is_cancelled_and_the_error_says_where_it_was() -> None:
    cancelled = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await read_until_disconnect(receive)
        finally:
            cancelled.set()

    async with raw_client(app, timeout=0.2) as client:
        with pytest.raises(TimeoutError) as caught:
            await client.get("/hang")
    assert str(caught.value) == TIMED_OUT.format(
        request="GET /hang",
        timeout=0.2,
        response=NO_RESPONSE,
        reading=READING,
        client=CLIENT_THERE.format(leave=None),
    )
    assert cancelled.is_set()


async def test_the_timeout_error_says_what_was_sent_and_when_the_client_left() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await anyio.sleep_forever()  # and never reads: nothing waits in receive()

    async with raw_client(app) as client:
        with pytest.raises(TimeoutError) as caught:
            await client.get("/stuck", leave=leave_after_chunks(1), timeout=0.2)
    message = str(caught.value)
    left = re.search(r"the client had left (\d+\.\d{3}) s", message)
    assert left is not None
    assert message == TIMED_OUT.format(
        request="GET /stuck",
        timeout=0.2,
        response=RESPONSE_STARTED.format(status=200, chunks=1),
        reading=NOT_READING,
        client=CLIENT_LEFT.format(seconds=float(left.group(1))),
    )


async def test_the_timeout_error_names_a_background_task_that_never_ends() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send)
        await anyio.sleep_forever()

    async with raw_client(app, timeout=0.2) as client:
        with pytest.raises(TimeoutError) as caught:
            await client.get("/done")
    assert str(caught.value) == TIMED_OUT.format(
        request="GET /done",
        timeout=0.2,
        response=RESPONSE_COMPLETE,
        reading=NOT_READING,
        client=CLIENT_THERE.format(leave=None),
    )


async def test_app_exceptions_are_raised_or_kept_in_the_outcome() -> None:
    app = FastAPI()
    install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise LookupError("boom")

    async with AbortingClient(app) as client:
        with pytest.raises(LookupError):
            await client.get("/boom")
    async with AbortingClient(app, raise_app_exceptions=False) as client:
        outcome = await client.get("/boom")
    assert isinstance(outcome.exception, LookupError)
    assert outcome.status == 500


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), "10", True])
def test_a_bad_timeout_is_refused(timeout: Any) -> None:
    with pytest.raises(ValueError, match=exactly(BAD_TIMEOUT.format(value=timeout))):
        AbortingClient(FastAPI(), timeout=timeout)


async def test_requests_need_the_client_open() -> None:
    client = AbortingClient(slow_app())
    with pytest.raises(RuntimeError) as caught:
        await client.get("/quick")
    assert str(caught.value) == NOT_OPEN


async def test_the_lifespan_runs_around_the_client_and_its_state_reaches_requests() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        events.append("startup")
        yield {"database": "open"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    install(app)

    @app.get("/")
    async def endpoint(request: Request) -> str:
        database: str = request.state.database
        return database

    async with AbortingClient(app) as client:
        assert events == ["startup"]
        outcome = await client.get("/")
    assert events == ["startup", "shutdown"]
    assert json.loads(outcome.body) == "open"


async def test_a_failing_lifespan_startup_is_raised() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise ConnectionError("no database")
        yield

    app = FastAPI(lifespan=lifespan)
    install(app)
    with pytest.raises(ConnectionError):
        async with AbortingClient(app):
            pass


async def test_a_lifespan_failure_message_is_raised() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(RuntimeError) as caught:
        async with AbortingClient(app):
            pass
    assert str(caught.value) == LIFESPAN_FAILED.format(phase="startup", message="no database")


async def test_lifespan_false_never_calls_the_app_with_a_lifespan_scope() -> None:
    scope_types: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope_types.append(scope["type"])
        await respond(send)

    async with AbortingClient(watched(app), lifespan=False) as client:
        await client.get("/")
    assert scope_types == ["http"]


async def test_a_lifespan_that_never_answers_is_bounded() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    with pytest.raises(
        TimeoutError, match=exactly(LIFESPAN_TIMED_OUT.format(phase="startup", timeout=0.2))
    ):
        async with AbortingClient(app, timeout=0.2):
            pass


async def test_an_app_without_a_lifespan_is_served_all_the_same() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"unsupported scope type {scope['type']}")
        await respond(send)

    async with AbortingClient(watched(app)) as client:
        assert (await client.get("/")).status == 200


@pytest.mark.parametrize("kind", ["http.response.start", "lifespan.startup.done"])
async def test_a_lifespan_message_uvicorn_refuses_is_refused_and_the_app_has_no_lifespan(
    kind: str,
) -> None:
    errors: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            try:
                await send({"type": kind})
            except RuntimeError as exc:
                errors.append(str(exc))
                raise
        await respond(send)

    async with AbortingClient(watched(app)) as client:
        assert (await client.get("/")).status == 200
    assert errors == [NOT_LIFESPAN.format(type=kind)]
