import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from fastapi_abort import RequestAborted, install

logger = logging.getLogger("chat")

app = FastAPI()
install(app)


async def generate(prompt: str) -> AsyncGenerator[str, None]:
    """Stands for a model that produces one token every 0.2 s."""
    for word in prompt.split() * 50:
        yield word


@app.get("/chat")
async def chat(prompt: str, ct: RequestAborted) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        sent = 0
        try:
            # aclosing: a stream cut short closes the model's generator at once, rather than
            # leaving it to the garbage collector (which trio warns about).
            async with aclosing(generate(prompt)) as tokens:
                async for token in tokens:
                    yield f"data: {token}\n\n"
                    sent += 1
                    await ct.sleep(0.2)  # or: with ct.scope(): around the next token's await
        finally:
            logger.info("sent %d tokens", sent)

    return StreamingResponse(events(), media_type="text/event-stream")
