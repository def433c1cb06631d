from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from quickstart import app as lottery  # your app

from fastapi_abort import RequestAborted, install
from fastapi_abort.testing import AbortingClient, leave_after, leave_after_chunks

pytestmark = pytest.mark.anyio  # anyio's pytest plugin comes with anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


async def test_the_draw_stops_when_the_player_leaves() -> None:
    async with AbortingClient(lottery) as client:
        outcome = await client.get("/happy/draw", leave=leave_after(0.7))
    assert outcome.token_tripped  # the request's token was cancelled: the client left
    assert outcome.status == 204  # what the endpoint answered, to nobody
    assert outcome.aborted_log is not None  # the quiet "499 Client Closed Request" line


ticker = FastAPI()
install(ticker)


@ticker.get("/prices")
async def prices(ct: RequestAborted) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        price = 100
        while True:
            yield f"{price}\n"
            price += 1
            await ct.sleep(0.1)

    return StreamingResponse(lines(), media_type="text/plain")


async def test_the_ticker_stops_after_the_lines_the_reader_saw() -> None:
    async with AbortingClient(ticker) as client:
        outcome = await client.get("/prices", leave=leave_after_chunks(3))
    assert outcome.body == b"100\n101\n102\n"
    assert outcome.token_tripped
    assert not outcome.response_complete
