import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup
from fastapi import FastAPI, Request

from fastapi_abort import CancellationTokenSource, RequestAborted, install

logger = logging.getLogger("mail")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, TaskGroup]]:
    # Work started here belongs to the app, not to a request: at shutdown, the app waits for it.
    async with anyio.create_task_group() as tasks:
        yield {"tasks": tasks}  # each request's request.state.tasks


app = FastAPI(lifespan=lifespan)
install(app)


async def send_receipt(order: int) -> None:
    with CancellationTokenSource(timeout=30) as source, source.token.scope():
        await anyio.sleep(0.1)  # stands for sending the mail, within its own 30 s
    logger.info("receipt for order %d sent", order)


@app.post("/orders/{order}")
async def place_order(order: int, request: Request, ct: RequestAborted) -> dict[str, int]:
    # Started at once, and run however this request ends: the client may leave during the
    # slow part below, which then ends with OperationCancelled.
    request.state.tasks.start_soon(send_receipt, order)
    with ct.scope():
        await anyio.sleep(1)  # stands for the rest of the work, which is for the client
    return {"order": order}
