import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI

from fastapi_abort import RequestAborted, deadline, install
from fastapi_abort.httpx import TokenTransport

# Downstream: uvicorn budget:pricing --port 8001
pricing = FastAPI()
install(pricing, max_budget=30)  # the caller's x-request-budget-ms, never more than 30 s


@pricing.get("/price/{item}")
async def price(item: int, ct: RequestAborted) -> dict[str, float]:
    await ct.sleep(5)  # a slow computation, which stops when the shop stops waiting
    return {"item": item, "price": 9.5}


# Upstream: PRICING_URL=http://127.0.0.1:8001 uvicorn budget:shop --port 8000
PRICING_URL = os.environ.get("PRICING_URL", "http://127.0.0.1:8001")
pool = httpx.AsyncHTTPTransport()  # the connections to pricing, shared by every request


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await pool.aclose()


shop = FastAPI(lifespan=lifespan)
install(shop)


@shop.get("/quote/{item}", dependencies=[Depends(deadline(2))])
async def quote(item: int, ct: RequestAborted) -> object:
    # Each call carries what is left of the 2 s: x-request-budget-ms: 1998, say.
    transport = TokenTransport(ct, pool)
    async with httpx.AsyncClient(transport=transport, base_url=PRICING_URL) as client:
        reply = await client.get(f"/price/{item}")
    return reply.json()
