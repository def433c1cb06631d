"""``AbortingClient`` (``_client``): its errors and bounds, each saying what to do."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    install,
)
from fastapi_abort.testing import (
    AbortingClient,
    leave_after_chunks,
)
from fastapi_abort.testing._client import (
    BAD_TIMEOUT,
    MIDDLEWARE_MISSING,
    NOT_OPEN,
)
from fastapi_abort.testing._exchange import (
    CLIENT_LEFT,
    CLIENT_THERE,
    NO_RESPONSE,
    NOT_READING,
    READING,
    RESPONSE_COMPLETE,
    RESPONSE_STARTED,
    TIMED_OUT,
)
from tests.support import (
    exactly,
    raw_client,
    read_until_disconnect,
    respond,
    slow_app,
)

pytestmark = pytest.mark.anyio


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
