"""The app's lifespan as the kit drives it (``_lifespan``), as uvicorn's ``lifespan="auto"``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from fastapi import FastAPI, Request
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    install,
)
from fastapi_abort.testing import (
    AbortingClient,
)
from fastapi_abort.testing._lifespan import LIFESPAN_FAILED, LIFESPAN_TIMED_OUT, NOT_LIFESPAN
from tests.support import (
    exactly,
    respond,
    watched,
)

pytestmark = pytest.mark.anyio


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
