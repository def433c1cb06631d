import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel

from fastapi_abort import RequestAborted, install

logger = logging.getLogger("chat")

app = FastAPI()
install(app)


class Token(BaseModel):
    n: int
    text: str


async def next_token(prompt: str, n: int) -> str:
    """Stands for a model that produces one token every 0.2 s."""
    await anyio.sleep(0.2)
    words = prompt.split()
    return words[n % len(words)]


@app.get("/chat", response_class=EventSourceResponse)
async def chat(prompt: str, ct: RequestAborted) -> AsyncIterator[ServerSentEvent]:
    sent = 0
    try:
        for n in range(100):
            with ct.scope():  # cancelled the moment the client leaves
                text = await next_token(prompt, n)
            yield ServerSentEvent(data=text, event="token", id=str(n))
            sent += 1
    finally:
        logger.info("sent %d tokens", sent)


@app.get("/chat.jsonl")
async def chat_lines(prompt: str, ct: RequestAborted) -> AsyncIterator[Token]:
    for n in range(100):
        with ct.scope():
            text = await next_token(prompt, n)
        yield Token(n=n, text=text)  # one JSON line each
