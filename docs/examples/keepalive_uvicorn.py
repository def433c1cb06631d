"""uvicorn on a listening socket with TCP keepalive: a client whose network vanished is noticed.

Run it with ``python keepalive_uvicorn.py``, open ``/ticks`` and take the client's network away
(not its tab: closing a tab sends a FIN): within about 30 s the stream ends and the
``fastapi_abort`` logger writes its 499 line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fastapi_abort import RequestAborted, install
from fastapi_abort.keepalive import Keepalive, listen

app = FastAPI()
install(app)


@app.get("/ticks")
async def ticks(ct: RequestAborted) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        n = 0
        while True:  # ends when the token trips: ct.sleep() raises OperationCancelled
            yield f"data: tick {n}\n\n"
            n += 1
            await ct.sleep(1)

    return StreamingResponse(events(), media_type="text/event-stream")


def main(host: str = "127.0.0.1", port: int = 8000, keepalive: Keepalive | None = None) -> None:
    # The socket is made here, with the options, and handed to uvicorn: every connection it
    # accepts inherits them (Linux). uvicorn's own --host/--port would make one without.
    sock = listen(host, port, keepalive or Keepalive())
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
