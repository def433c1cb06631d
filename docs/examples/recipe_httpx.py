import httpx
from fastapi import FastAPI

from fastapi_abort import RequestAborted, install

app = FastAPI()
install(app)
upstream = httpx.AsyncClient(base_url="https://api.example.com")


@app.get("/weather")
async def weather(city: str, ct: RequestAborted) -> object:
    with ct.scope():  # the client leaves: the call is cancelled, and its connection closed
        reply = await upstream.get("/forecast", params={"city": city}, timeout=30)
    return reply.json()
