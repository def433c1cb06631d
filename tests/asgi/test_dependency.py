"""The token's dependency: one token per request for every consumer, in the event loop or a
worker thread (a foreign thread gets an error that says what to do), nothing added to OpenAPI, and
an error that says how to fix a missing middleware.

None of these needs a client that leaves, so httpx's in-process transport is enough here.
"""

import threading
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.types import Receive, Scope, Send

from fastapi_abort import (
    CancellationToken,
    RequestAborted,
    RequestAbortedMiddleware,
    get_request_aborted,
    install,
    request_aborted,
)
from fastapi_abort._dependency import FOREIGN_THREAD, MIDDLEWARE_MISSING
from tests.scripted import ScriptedServer, http_scope
from tests.support import WAIT, client, respond

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    # httpx's ASGITransport leaves an async generator unclosed on trio (a ResourceWarning).
    return "asyncio"


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


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # no httpx here
async def test_get_request_aborted_in_a_foreign_thread_says_what_to_do(anyio_backend: str) -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        def in_thread() -> None:
            try:
                get_request_aborted(Request(scope))
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join(WAIT)
        await respond(send)

    server = ScriptedServer()
    with anyio.fail_after(WAIT):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert [str(e) for e in errors] == [FOREIGN_THREAD]
