"""FastAPI endpoints whose client leaves, driven in process by fastapi_abort.testing.

What a real server adds (sockets, its own receive) is tested in tests/servers/test_leaving.py;
here the point is the FastAPI side: dependencies, `def` endpoints in worker threads, streaming
responses, uploads and background tasks, on asyncio and trio.

No ``from __future__ import annotations`` here: FastAPI must resolve the annotations of endpoints
and dependencies defined inside the tests.
"""

import re
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import anyio.from_thread
import pytest
from fastapi import BackgroundTasks, Body, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from fastapi_abort import CancellationToken, RequestAborted, install
from fastapi_abort.testing import (
    AbortingClient,
    leave_after_chunks,
    leave_mid_upload,
    leave_when,
)
from tests.support import WAIT

pytestmark = pytest.mark.anyio


def quiet_line(path: str) -> re.Pattern[str]:
    return re.compile(rf"[A-Z]+ {re.escape(path)}: 499 Client Closed Request after \d+\.\d{{3}} s")


async def test_a_dependency_waiting_on_the_token_ends_the_request_with_499() -> None:
    app = FastAPI()
    install(app)
    waiting = anyio.Event()
    endpoint_ran: list[bool] = []

    async def slow_upstream(ct: RequestAborted) -> str:
        waiting.set()
        await ct.sleep(WAIT)
        return "the upstream answered"

    @app.get("/weather")
    async def weather(forecast: Annotated[str, Depends(slow_upstream)]) -> str:
        endpoint_ran.append(True)
        return forecast

    async with AbortingClient(app) as client:
        outcome = await client.get("/weather", leave=leave_when(waiting))
    assert outcome.token_tripped
    assert outcome.status == 499
    assert outcome.aborted_log is not None
    assert quiet_line("/weather").fullmatch(outcome.aborted_log.getMessage())
    assert endpoint_ran == []


async def test_a_yield_dependency_sees_the_tripped_token_when_it_cleans_up() -> None:
    app = FastAPI()
    install(app)
    waiting = anyio.Event()
    at_cleanup: list[bool] = []

    async def session(ct: RequestAborted) -> AsyncIterator[str]:
        try:
            yield "session"
        finally:
            at_cleanup.append(ct.is_cancellation_requested)

    @app.get("/report")
    async def report(_: Annotated[str, Depends(session)], ct: RequestAborted) -> None:
        waiting.set()
        await ct.sleep(WAIT)

    async with AbortingClient(app) as client:
        outcome = await client.get("/report", leave=leave_when(waiting))
    assert at_cleanup == [True]
    assert outcome.status == 499
    assert outcome.aborted_log is not None


async def test_a_def_endpoint_in_a_worker_thread_stops_when_the_client_leaves() -> None:
    app = FastAPI()
    install(app)
    waiting = anyio.Event()

    @app.get("/export")
    def export(ct: RequestAborted) -> str:
        anyio.from_thread.run_sync(waiting.set)
        ct.wait_blocking(WAIT)  # a blocking call that the token ends early
        ct.throw_if_cancellation_requested()
        return "exported"

    async with AbortingClient(app) as client:
        outcome = await client.get("/export", leave=leave_when(waiting))
    assert outcome.token_tripped
    assert outcome.status == 499
    assert outcome.aborted_log is not None
    assert quiet_line("/export").fullmatch(outcome.aborted_log.getMessage())


async def test_a_streaming_endpoint_stops_after_the_chunks_the_client_read() -> None:
    app = FastAPI()
    install(app)
    stopped: list[bool] = []

    @app.get("/chat")
    async def chat(ct: RequestAborted) -> StreamingResponse:
        async def words() -> AsyncIterator[bytes]:
            try:
                yield b"one "
                yield b"two "
                yield b"three "
                await ct.sleep(WAIT)  # the model thinks, and the reader leaves
                yield b"never sent"
            finally:
                stopped.append(ct.is_cancellation_requested)

        return StreamingResponse(words(), media_type="text/plain")

    async with AbortingClient(app) as client:
        outcome = await client.get("/chat", leave=leave_after_chunks(3))
    assert outcome.status == 200  # sent before the client left
    assert outcome.body == b"one two three "
    assert not outcome.response_complete
    assert outcome.client_left_before_completion
    assert outcome.aborted_log is not None
    assert stopped == [True]


async def test_an_upload_read_with_the_token_stops_mid_upload() -> None:
    app = FastAPI()
    install(app)
    read: list[int] = []

    @app.post("/upload")
    async def upload(request: Request, ct: RequestAborted) -> int:
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
        except ClientDisconnect:
            # Starlette's own news of the leave: make it the request's quiet ending.
            ct.throw_if_cancellation_requested()
            raise
        finally:
            read.append(size)
        return size

    async def file() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 500

    async with AbortingClient(app) as client:
        outcome = await client.post("/upload", content=file(), leave=leave_mid_upload(1000))
    assert read == [1000]
    assert outcome.request_body_read == 1000
    assert outcome.token_tripped
    assert outcome.status == 499
    assert outcome.aborted_log is not None


async def test_a_declared_body_cut_short_is_answered_400_and_logged_as_the_quiet_499() -> None:
    app = FastAPI()
    install(app)
    endpoint_ran: list[bool] = []

    @app.post("/notes")
    async def notes(text: Annotated[str, Body()], ct: RequestAborted) -> str:
        endpoint_ran.append(True)
        return text

    async with AbortingClient(app) as client:
        outcome = await client.post(
            "/notes",
            content=b'{"text": "' + b"x" * 2000 + b'"}',
            headers={"content-type": "application/json"},
            leave=leave_mid_upload(1000),
        )
    # FastAPI reads the body before it solves the dependencies: nobody asked for the token yet,
    # and FastAPI calls the cut-short body a parse error. The middleware heard the leave.
    assert outcome.token is None
    assert outcome.status == 400
    assert outcome.client_left_before_completion
    assert outcome.aborted_log is not None
    assert quiet_line("/notes").fullmatch(outcome.aborted_log.getMessage())
    assert endpoint_ran == []


async def test_background_tasks_run_when_the_client_leaves_after_the_response() -> None:
    app = FastAPI()
    install(app)
    leave = leave_after_chunks(1)
    receipts: list[tuple[bool, bool]] = []

    async def send_receipt(ct: CancellationToken) -> None:
        # The client is gone by now, but the response was complete: nothing to cancel.
        receipts.append((leave.left, ct.is_cancellation_requested))

    @app.post("/orders/{order}")
    async def order(order: int, tasks: BackgroundTasks, ct: RequestAborted) -> dict[str, int]:
        tasks.add_task(send_receipt, ct)
        return {"order": order}

    async with AbortingClient(app) as client:
        outcome = await client.post("/orders/7", leave=leave)
    assert receipts == [(True, False)]
    assert outcome.status == 200
    assert outcome.client_left
    assert not outcome.client_left_before_completion
    assert not outcome.token_tripped
    assert outcome.aborted_log is None


async def test_background_tasks_never_run_for_a_request_whose_client_left_first() -> None:
    app = FastAPI()
    install(app)
    waiting = anyio.Event()
    receipts: list[int] = []

    async def send_receipt(order: int) -> None:
        receipts.append(order)

    @app.post("/orders/{order}")
    async def order(order: int, tasks: BackgroundTasks, ct: RequestAborted) -> dict[str, int]:
        tasks.add_task(send_receipt, order)
        waiting.set()
        await ct.sleep(WAIT)
        return {"order": order}

    async with AbortingClient(app) as client:
        outcome = await client.post("/orders/7", leave=leave_when(waiting))
    assert outcome.status == 499
    assert outcome.token_tripped
    assert receipts == []
