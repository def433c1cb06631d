from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fastapi_abort import (
    CancellationReason,
    OperationCancelled,
    RequestAborted,
    StopOnShutdown,
    install,
)

app = FastAPI()
install(app, stopping=True)


@app.get("/ticks")
async def ticks(ct: StopOnShutdown) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        # Ends when the client leaves, or as soon as the server starts to shut down.
        n = 0
        try:
            while True:
                yield f"data: {n}\n\n"
                n += 1
                await ct.sleep(1)
        except OperationCancelled:
            if ct.reason is not CancellationReason.SHUTDOWN:
                raise  # the client left: nobody to tell
        # The server is going away: ask the client to reconnect (to another instance).
        yield "event: restart\nretry: 2000\ndata: server restarting\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/report")
async def report(ct: RequestAborted) -> dict[str, str]:
    # A finite request keeps the server's whole graceful period: SIGTERM does not cut it.
    await ct.sleep(2)
    return {"report": "done"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, timeout_graceful_shutdown=30)
