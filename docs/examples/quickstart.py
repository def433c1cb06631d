import logging
import random

import anyio
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from fastapi_abort import RequestAborted, install

logger = logging.getLogger("lottery")

app = FastAPI()
install(app)


@app.get("/happy/draw")
async def draw(ct: RequestAborted) -> Response:
    lucky = 0
    for _ in range(5):
        if ct.is_cancellation_requested:
            logger.info("request cancelled")
            return Response(status_code=204)
        lucky = random.randint(0, 999)
        await anyio.sleep(0.5)
    return HTMLResponse(f"<p>Your lucky number: {lucky}</p>")
