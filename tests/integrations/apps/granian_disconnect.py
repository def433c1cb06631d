"""A minimal reproduction, without fastapi-abort: on granian, a ``receive()`` cancelled before it
completed makes granian answer the app's other ``receive()`` with ``http.disconnect``, for a
client that is still connected.

``/stream`` is Starlette's ``StreamingResponse`` over a generator that polls ``await
request.is_disconnected()`` before each of its 5 chunks, 10 ms apart: sse-starlette's README
pattern. The response listens for the disconnect itself (Starlette's ``listen_for_disconnect``,
ASGI spec 2.3, which granian declares), a ``receive()`` that waits; ``is_disconnected()`` is a
``receive()`` in a cancel scope cancelled before the call. On granian the waiting one then gets
``http.disconnect``: the response stops and the client gets a truncated body. uvicorn and
hypercorn deliver no such message.

``python -m tests.integrations.apps.granian_disconnect [REQUESTS]`` counts, per server, the
requests (each on a connection of its own, the client staying to the end) whose stream was cut
short.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

#: The servers the count runs on (kinds of :func:`tests.serve.running`).
SERVERS = ("granian", "uvicorn-h11", "hypercorn-asyncio")
TARGET = "tests.integrations.apps.granian_disconnect:app"
CHUNKS = 5
#: The whole body of a stream that was not cut short.
FULL_BODY = b"".join(b"chunk %d\n" % i for i in range(CHUNKS))


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(CHUNKS):
            if await request.is_disconnected():
                return
            yield b"chunk %d\n" % i
            await anyio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


app = Starlette(routes=[Route("/stream", stream)])


def cut_short(port: int, requests: int) -> int:
    """How many of ``requests`` GETs of ``/stream`` did not get the whole body."""
    count = 0
    for _ in range(requests):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            try:
                count += client.get("/stream").content != FULL_BODY
            except httpx.RemoteProtocolError:  # the server ended the chunked body early
                count += 1
    return count


def main(requests: int = 20) -> None:
    from tests.serve import running

    with tempfile.TemporaryDirectory() as directory:
        for kind in SERVERS:
            with running(kind, Path(directory) / f"{kind}.log", TARGET) as served:
                count = cut_short(served.port, requests)
            print(f"{kind}: {count} of {requests} streams cut short, their client still there")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
