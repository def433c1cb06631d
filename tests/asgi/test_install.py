"""install(): what it adds to the app, what it refuses, and where it goes in the middleware stack.

None of these needs a client that leaves, so httpx's in-process transport is enough here.
"""

import math
import re
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    OperationCancelled,
    RequestAborted,
    RequestAbortedMiddleware,
    install,
    operation_cancelled_handler,
)
from fastapi_abort._config import BAD_DELAY, BAD_LEVEL, BAD_MESSAGE, BAD_STATUS
from fastapi_abort._install import TOO_LATE, TWICE
from tests.support import client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    # httpx's ASGITransport leaves an async generator unclosed on trio (a ResourceWarning).
    return "asyncio"


async def test_adding_middleware_and_handler_by_hand_works() -> None:
    app = FastAPI()
    app.add_middleware(RequestAbortedMiddleware)
    app.add_exception_handler(OperationCancelled, operation_cancelled_handler)

    @app.get("/")
    async def endpoint(ct: RequestAborted) -> dict[str, bool]:
        return {"cancelled": ct.is_cancellation_requested}

    async with client(app) as http:
        assert (await http.get("/")).json() == {"cancelled": False}


async def test_install_wraps_even_middleware_added_after_it() -> None:
    app = FastAPI()
    install(app)
    outer_saw_state: list[bool] = []

    @app.middleware("http")
    async def added_later(request: Request, call_next: Any) -> Any:
        outer_saw_state.append("fastapi_abort.request" in request.scope)
        return await call_next(request)

    @app.get("/")
    async def endpoint() -> JSONResponse:
        return JSONResponse({})

    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
    assert outer_saw_state == [True]


async def test_install_after_the_app_started_is_refused() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint() -> None: ...

    async with client(app) as http:
        await http.get("/")
    with pytest.raises(RuntimeError) as caught:
        install(app)
    assert str(caught.value) == TOO_LATE


def test_install_twice_is_refused() -> None:
    app = FastAPI()
    install(app)
    with pytest.raises(RuntimeError) as caught:
        install(app)
    assert str(caught.value) == TWICE


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"status_code": 99}, ValueError, BAD_STATUS.format(value=99)),
        ({"status_code": "499"}, TypeError, BAD_STATUS.format(value="499")),
        ({"status_code": True}, TypeError, BAD_STATUS.format(value=True)),
        ({"log_level": "LOUD"}, ValueError, BAD_LEVEL.format(value="LOUD")),
        ({"log_level": 2.5}, ValueError, BAD_LEVEL.format(value=2.5)),
        ({"message": 499}, TypeError, BAD_MESSAGE.format(value=499)),
    ],
)
def test_bad_options_fail_at_install_with_a_clear_message(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    app = FastAPI()
    with pytest.raises(error) as caught:
        install(app, **options)
    assert str(caught.value) == message
    assert OperationCancelled not in app.exception_handlers


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, True, "0"], ids=repr)
def test_a_bad_watcher_delay_is_refused_at_once(bad: Any) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(BAD_DELAY.format(value=bad))}$"):
        install(FastAPI(), watcher_delay=bad)


def test_a_client_disconnect_handler_of_the_app_is_kept() -> None:
    async def mine(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("mine")  # pragma: no cover - never called here

    app = FastAPI()
    app.add_exception_handler(ClientDisconnect, mine)
    install(app)
    assert app.exception_handlers[ClientDisconnect] is mine


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # a plain JSON response: no warning
async def test_an_app_whose_stack_is_not_starlettes_keeps_its_own_outer_layer(
    anyio_backend: str,
) -> None:
    # install() takes the place of Starlette's ServerErrorMiddleware only: an app that builds
    # another outer layer keeps it, inside the middleware.
    calls: list[str] = []

    class Outer:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            calls.append(scope["type"])
            await self.app(scope, receive, send)

    class OwnStack(FastAPI):
        def build_middleware_stack(self) -> Any:
            return Outer(super().build_middleware_stack())

    app = OwnStack()
    install(app)

    @app.get("/")
    async def root(ct: RequestAborted) -> str:
        return "ok" if not ct.is_cancellation_requested else "cancelled"

    async with client(app) as http:
        response = await http.get("/")
    assert response.json() == "ok"
    assert calls == ["http"]
