"""The FastAPI side: one token per request everywhere, set-up errors, and the handler's answers.

None of these needs a client that leaves, so httpx's in-process transport is enough here.
"""

import logging
import types
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

import fastapi_abort
from fastapi_abort import (
    CancellationToken,
    CancellationTokenSource,
    OperationCancelled,
    RequestAborted,
    RequestAbortedMiddleware,
    get_request_aborted,
    install,
    operation_cancelled_handler,
    request_aborted,
)
from fastapi_abort._config import BAD_LEVEL, BAD_MESSAGE, BAD_STATUS
from fastapi_abort._dependency import MIDDLEWARE_MISSING
from fastapi_abort._install import TOO_LATE, TWICE

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    # httpx's ASGITransport leaves an async generator unclosed on trio (a ResourceWarning).
    return "asyncio"


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_all_is_exactly_the_public_api() -> None:
    # Submodules (fastapi_abort.testing, fastapi_abort.httpx) are imported on their own.
    public = {
        name
        for name, value in vars(fastapi_abort).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(fastapi_abort.__all__) == public
    assert isinstance(fastapi_abort.__all__, tuple)


async def test_every_consumer_in_a_request_gets_the_same_token() -> None:
    app = FastAPI()
    install(app)
    seen: list[CancellationToken] = []

    async def sub_dependency(ct: RequestAborted) -> None:
        seen.append(ct)

    async def dependency(
        ct: Annotated[CancellationToken, Depends(request_aborted, use_cache=False)],
        _: Annotated[None, Depends(sub_dependency)],
    ) -> None:
        seen.append(ct)

    def sync_dependency(request: Request, ct: RequestAborted) -> None:
        # In a worker thread: the accessor reaches the same token.
        seen.append(get_request_aborted(request))
        seen.append(ct)

    @app.get("/")
    async def endpoint(
        request: Request,
        ct: CancellationToken = Depends(request_aborted),
        _a: None = Depends(dependency),
        _b: None = Depends(sync_dependency),
    ) -> dict[str, Any]:
        seen.append(ct)
        seen.append(get_request_aborted(request))
        return {}

    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
        assert len(seen) == 6
        assert len({id(token) for token in seen}) == 1
        first = seen[0]
        seen.clear()
        assert (await http.get("/")).status_code == 200
    assert len({id(token) for token in seen}) == 1
    assert seen[0] is not first


async def test_a_sync_dependency_asking_first_in_a_thread_gets_the_token() -> None:
    app = FastAPI()
    install(app)
    seen: list[CancellationToken] = []

    def sync_dependency(request: Request) -> None:
        seen.append(get_request_aborted(request))  # first ask for the token, in a thread

    @app.get("/", dependencies=[Depends(sync_dependency)])
    async def endpoint(ct: RequestAborted) -> None:
        seen.append(ct)

    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
    assert len(seen) == 2
    assert seen[0] is seen[1]


def test_the_token_adds_nothing_to_openapi() -> None:
    app = FastAPI()
    install(app)

    @app.get("/items/{item_id}")
    async def endpoint(item_id: int, ct: RequestAborted) -> None: ...

    operation = app.openapi()["paths"]["/items/{item_id}"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["item_id"]
    assert "requestBody" not in operation


async def test_without_the_middleware_the_error_says_how_to_fix_it() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(ct: RequestAborted) -> None: ...

    async with client(app) as http:
        with pytest.raises(RuntimeError) as caught:
            await http.get("/")
    assert str(caught.value) == MIDDLEWARE_MISSING


async def test_a_deadline_reaches_the_client_as_504_logged_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install(app)

    @app.get("/report")
    async def report() -> None:
        with CancellationTokenSource(timeout=0) as source:
            source.token.throw_if_cancellation_requested()

    async with client(app) as http:
        response = await http.get("/report")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Gateway Timeout",
        "status": 504,
        "detail": "The request did not complete within its deadline.",
    }
    (record,) = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "GET /report: 504 Gateway Timeout: The operation was cancelled (deadline)"
    )


async def test_a_token_of_your_own_is_a_500_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install(app)

    @app.get("/own")
    async def own() -> None:
        source = CancellationTokenSource()
        source.cancel("stop button")
        source.token.throw_if_cancellation_requested()

    async with client(app) as http:
        response = await http.get("/own")
    assert response.status_code == 500
    (record,) = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "OperationCancelled (stop button) escaped the endpoint" in record.getMessage()


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
