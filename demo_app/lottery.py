"""The "Happy" lottery: five draws, 0.5 s apart, that stop when the player leaves.

Open /happy and follow a link: the draw opens in a new tab. Close that tab before the number
shows, and the log says "request cancelled" (demo_app.lottery), then one quiet 499 line
(fastapi_abort). The same draw is served three times, once per way of getting the token.
"""

import logging
import random
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from fastapi_abort import CancellationToken, RequestAborted, get_request_aborted, request_aborted

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/happy", tags=["lottery"])
shop_router = APIRouter(prefix="/happy/shop", tags=["lottery"])

ROUNDS = 5
PAUSE = 0.5  # seconds between draws

SHOP_FRONT = """<!doctype html>
<title>Happy lottery</title>
<h1>Happy lottery</h1>
<p>Each link opens a draw in a new tab. A draw takes 2.5 s: close the tab before that, and
the server stops drawing.</p>
<ul>
  <li><a href="/happy/draw" target="_blank">Draw</a> (the token as a parameter)</li>
  <li><a href="/happy/draw-from-request" target="_blank">Draw</a> (the token from the request)</li>
  <li><a href="/happy/shop/draw" target="_blank">Draw</a> or
    <a href="/happy/shop/quick-pick" target="_blank">quick-pick</a> (one round) in the shop
    (the token on a class that the shop's routes share)</li>
</ul>
"""


async def draw(ct: CancellationToken, rounds: int = ROUNDS) -> Response:
    """Draw a number ``rounds`` times, ``PAUSE`` seconds apart, and show the last one.

    The token is checked at the start of each round: once the player has gone, there is nobody
    to show a number to, so stop and answer 204 No Content (which nobody will read either).
    """
    lucky = 0
    for _ in range(rounds):
        if ct.is_cancellation_requested:
            logger.info("request cancelled")
            return Response(status_code=204)
        lucky = random.randint(0, 999)
        await anyio.sleep(PAUSE)
    return HTMLResponse(
        f"<!doctype html><title>Your lucky number</title><p>Your lucky number: {lucky}</p>"
        f'<script>alert("Your lucky number: {lucky}")</script>'
    )


@router.get("", response_class=HTMLResponse)
async def shop_front() -> str:
    return SHOP_FRONT


# 1. A parameter, like a CancellationToken parameter of an ASP.NET Core action.
@router.get("/draw", response_class=HTMLResponse)
async def draw_with_depends(
    ct: Annotated[CancellationToken, Depends(request_aborted)],
) -> Response:
    return await draw(ct)


# 2. From the request, like HttpContext.RequestAborted.
@router.get("/draw-from-request", response_class=HTMLResponse)
async def draw_from_request(request: Request) -> Response:
    return await draw(get_request_aborted(request))


# 3. On a class that the routes of a router share, like a controller property bound with
#    [BindProperty(SupportsGet = true)]. FastAPI makes one LotteryShop per request.
class LotteryShop:
    def __init__(self, ct: RequestAborted) -> None:
        self.ct = ct


@shop_router.get("/draw", response_class=HTMLResponse)
async def shop_draw(shop: Annotated[LotteryShop, Depends()]) -> Response:
    return await draw(shop.ct)


@shop_router.get("/quick-pick", response_class=HTMLResponse)
async def shop_quick_pick(shop: Annotated[LotteryShop, Depends()]) -> Response:
    return await draw(shop.ct, rounds=1)
