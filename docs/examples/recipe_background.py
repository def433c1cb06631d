import logging

import anyio
from fastapi import BackgroundTasks, FastAPI

from fastapi_abort import CancellationToken, CancellationTokenSource, install

logger = logging.getLogger("mail")

app = FastAPI()
install(app)


async def send_receipt(order: int, ct: CancellationToken) -> None:
    with ct.scope():
        await anyio.sleep(0.1)  # stands for sending the mail
    logger.info("receipt for order %d sent", order)


@app.post("/orders/{order}")
async def place_order(order: int, background: BackgroundTasks) -> dict[str, int]:
    # Not the request's token: the receipt must go out even if the client leaves now. A
    # token of its own (a deadline here) bounds the background work instead.
    source = CancellationTokenSource(timeout=30)
    background.add_task(send_receipt, order, source.token)
    background.add_task(source.close)
    return {"order": order}
