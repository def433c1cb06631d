"""slowapi's limiter, with and without fastapi-abort (:mod:`.twins`), with its ``X-RateLimit-*``
headers. slowapi counts per path (and per key: the request id here).

* ``/limited/{rid}``: two requests a minute, answered at once;
* ``/limited-wait/{rid}``: one request a minute, which waits 30 s on the token.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request, Response
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded

from fastapi_abort import CancellationToken, install
from tests.integrations.apps.twins import Record, ending, token_dependency
from tests.recording import Recorder

LIMIT = "2/minute"
recorder = Recorder(Record)
recorder.install_logging()


def key(request: Request) -> str:
    """Each test its own bucket: the request id."""
    return str(request.path_params["rid"])


def build(plugin: bool) -> FastAPI:
    app = FastAPI()
    if plugin:
        install(app)
    limiter = Limiter(key_func=key, headers_enabled=True)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    recorder.serve_await(app)
    token = Depends(token_dependency(plugin))

    @app.get("/limited/{rid}")
    @limiter.limit(LIMIT)
    async def limited(rid: str, request: Request, response: Response) -> dict[str, str]:
        return {"rid": rid}

    @app.get("/limited-wait/{rid}")
    @limiter.limit("1/minute")
    async def limited_wait(
        rid: str, request: Request, response: Response, ct: CancellationToken = token
    ) -> dict[str, str]:
        with ending(recorder.watch(rid, ct)):
            await ct.sleep(30)
        return {"rid": rid}

    return app


app = build(plugin=True)
plain = build(plugin=False)
