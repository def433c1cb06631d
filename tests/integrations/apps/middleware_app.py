"""fastapi-abort among Starlette's middleware, with and without the plugin (:mod:`.twins`):
GZip, CORS, sessions, a ``BaseHTTPMiddleware`` added before ``install()`` and one after, and,
innermost, a pure ASGI middleware that notes every exception that reaches it.

* ``/big/{rid}``: a JSON answer large enough to be compressed;
* ``/session/{rid}``: writes the session and answers it;
* ``/wait/{rid}``: waits 30 s on the token;
* ``/stream/{rid}`` and ``/stream-sync/{rid}``: ``StreamingResponse`` over an async generator
  (``ct.sleep``) and a ``def`` one (``ct.sleep_blocking``), a chunk every 0.05 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_abort import CancellationToken, install
from tests.integrations.apps.twins import (
    ORIGIN,
    Record,
    ending,
    ending_in_thread,
    token_dependency,
)
from tests.recording import Recorder

recorder = Recorder(Record)
recorder.install_logging()


def rid_of(scope: Scope) -> str:
    return str(scope.get("path", "")).rstrip("/").rsplit("/", 1)[-1]


class Witness:
    """Notes in the request's record each exception that escapes the app inside it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            if scope["type"] == "http":
                recorder.record(rid_of(scope)).escaped.append(f"{type(exc).__name__}: {exc}")
            raise


def marking(
    name: str,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """A ``BaseHTTPMiddleware`` dispatch that adds the header ``x-<name>``."""

    async def dispatch(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers[f"x-{name}"] = "1"
        return response

    return dispatch


def build(plugin: bool) -> FastAPI:
    app = FastAPI()
    app.add_middleware(Witness)
    app.add_middleware(BaseHTTPMiddleware, dispatch=marking("before"))
    app.add_middleware(SessionMiddleware, secret_key="not a secret")
    if plugin:
        install(app)
    app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["GET"])
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(BaseHTTPMiddleware, dispatch=marking("after"))
    recorder.serve_await(app)
    token = Depends(token_dependency(plugin))

    @app.get("/big/{rid}")
    async def big(rid: str) -> dict[str, list[str]]:
        return {rid: [f"line {i}" for i in range(200)]}

    @app.get("/session/{rid}")
    async def session(rid: str, request: Request) -> dict[str, str]:
        request.session["rid"] = rid
        return dict(request.session)

    @app.get("/wait/{rid}")
    async def wait(rid: str, ct: CancellationToken = token) -> None:
        with ending(recorder.watch(rid, ct)):
            await ct.sleep(30)

    @app.get("/stream/{rid}")
    async def stream(rid: str, n: int = 600, ct: CancellationToken = token) -> StreamingResponse:
        rec = recorder.watch(rid, ct)

        async def chunks() -> AsyncIterator[bytes]:
            with ending(rec):
                for i in range(n):
                    yield b"chunk %d\n" % i
                    await ct.sleep(0.05)

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/stream-sync/{rid}")
    async def stream_sync(
        rid: str, n: int = 600, ct: CancellationToken = token
    ) -> StreamingResponse:
        rec = recorder.watch(rid, ct)

        def chunks() -> Iterator[bytes]:
            with ending_in_thread(rec):
                for i in range(n):
                    yield b"chunk %d\n" % i
                    ct.sleep_blocking(0.05)

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


app = build(plugin=True)
plain = build(plugin=False)
