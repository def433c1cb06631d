import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fastapi_abort import RequestAborted, install
from fastapi_abort.httpx import TokenTransport

# Downstream: uvicorn propagation:warehouse --port 8001
warehouse = FastAPI()
install(warehouse)


@warehouse.get("/stock/{item}")
async def stock(item: int, ct: RequestAborted) -> dict[str, int]:
    await ct.sleep(3)  # a slow count, which stops as soon as the shop hangs up
    return {"item": item, "in_stock": 7}


@warehouse.get("/deliveries")
async def deliveries(ct: RequestAborted) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        for n in itertools.count():
            yield f"delivery {n}\n".encode()
            await ct.sleep(0.5)

    return StreamingResponse(lines(), media_type="text/plain")


# Upstream: WAREHOUSE_URL=http://127.0.0.1:8001 uvicorn propagation:shop --port 8000
WAREHOUSE_URL = os.environ.get("WAREHOUSE_URL", "http://127.0.0.1:8001")
pool = httpx.AsyncHTTPTransport()  # the connections to the warehouse, shared by every request
warehouse_client = httpx.AsyncClient(transport=pool, base_url=WAREHOUSE_URL, timeout=30)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with warehouse_client:  # closes the pool on the way out
        yield


shop = FastAPI(lifespan=lifespan)
install(shop)


@shop.get("/items/{item}")
async def item(item: int, ct: RequestAborted) -> object:
    with ct.scope():  # the shopper leaves: the call is cancelled and its connection closed
        reply = await warehouse_client.get(f"/stock/{item}")
    return reply.json()


@shop.get("/deliveries")
async def relay_deliveries(ct: RequestAborted) -> StreamingResponse:
    async def relay() -> AsyncIterator[bytes]:
        # Read after the endpoint has returned, so no `with ct.scope()` can wrap it: bind the
        # client to the token instead (it shares the pool, and leaves it open when closed).
        client = httpx.AsyncClient(transport=TokenTransport(ct, pool), base_url=WAREHOUSE_URL)
        async with client, client.stream("GET", "/deliveries") as reply:
            async for chunk in reply.aiter_raw():
                yield chunk

    return StreamingResponse(relay(), media_type="text/plain")
