"""Test an app's endpoints with a client that leaves: ``fastapi_abort.testing``.

httpx's ``ASGITransport`` and Starlette's ``TestClient`` never tell a running app that its
client went away. :class:`AbortingClient` is a small in-process ASGI server that can: it calls the
app as uvicorn does, makes the client leave at a chosen moment (a :class:`Leave` trigger), and
reports what happened in a :class:`RequestOutcome`: what the app sent, whether the request's
token tripped, the quiet 499 log record::

    async with AbortingClient(app) as client:
        outcome = await client.get("/slow", leave=leave_after(0.05))
    assert outcome.token_tripped
    assert outcome.status == 499

It runs on asyncio and trio (anyio), needs no pytest, and is not imported by ``fastapi_abort``.
The app must have :func:`fastapi_abort.install` (or ``RequestAbortedMiddleware``) applied.
"""

from ._client import AbortingClient as AbortingClient
from ._leave import Leave as Leave
from ._leave import leave_after as leave_after
from ._leave import leave_after_chunks as leave_after_chunks
from ._leave import leave_mid_upload as leave_mid_upload
from ._leave import leave_on_response_start as leave_on_response_start
from ._leave import leave_when as leave_when
from ._outcome import RequestOutcome as RequestOutcome

__all__ = (
    "AbortingClient",
    "Leave",
    "RequestOutcome",
    "leave_after",
    "leave_after_chunks",
    "leave_mid_upload",
    "leave_on_response_start",
    "leave_when",
)
