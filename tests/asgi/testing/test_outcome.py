"""What the kit reports for a request (``RequestOutcome``): the token, the status, the quiet line
and where it is shown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    CancellationReason,
    RequestAborted,
    install,
)
from fastapi_abort._endings import DEADLINE_LOG
from fastapi_abort.testing import (
    AbortingClient,
    Leave,
    RequestOutcome,
    leave_after,
)
from tests.support import (
    SLOW_QUIET_LINE,
    raw_client,
    respond,
    slow_app,
)

pytestmark = pytest.mark.anyio


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
    assert SLOW_QUIET_LINE.fullmatch(outcome.aborted_log.getMessage())
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
