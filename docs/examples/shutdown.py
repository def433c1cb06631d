import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fastapi_abort import (
    CancellationReason,
    CancellationTokenSource,
    OperationCancelled,
    RequestAborted,
    install,
)

app = FastAPI()
install(app)

#: Cancelled when the server starts to shut down: ASP.NET Core's ApplicationStopping.
stopping = CancellationTokenSource()


@app.get("/ticks")
async def ticks(ct: RequestAborted) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        # Ends when the client leaves (ct) or when the server starts to shut down (stopping).
        with CancellationTokenSource(ct, stopping.token) as linked:
            n = 0
            try:
                while True:
                    yield f"data: {n}\n\n"
                    n += 1
                    await linked.token.sleep(1)
            except OperationCancelled:
                if linked.token.reason is not CancellationReason.SHUTDOWN:
                    raise  # the client left: nobody to tell
            # The server is going away: ask the client to reconnect, and end the response.
            yield "event: restart\nretry: 2000\ndata: server restarting\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


class Server(uvicorn.Server):
    """uvicorn's server, which cancels ``stopping`` as soon as it starts to shut down."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stopping.cancel(CancellationReason.SHUTDOWN)
        await super().shutdown(sockets)


if __name__ == "__main__":
    Server(uvicorn.Config(app, timeout_graceful_shutdown=30)).run()
