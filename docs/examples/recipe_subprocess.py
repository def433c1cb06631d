import anyio
from fastapi import FastAPI

from fastapi_abort import RequestAborted, install

app = FastAPI()
install(app)


@app.get("/convert")
async def convert(ct: RequestAborted) -> str:
    with ct.scope():  # the client leaves: anyio kills the process
        result = await anyio.run_process(["sleep", "10"])  # say, a long ffmpeg run
    return result.stdout.decode()
