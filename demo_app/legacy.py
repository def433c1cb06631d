"""Legacy code that never looks at a token, served twice: cooperative, and preemptive.

``legacy_draw()`` is five rounds of ``await anyio.sleep(1)``, written before fastapi-abort. Both
routes run it and both ask for the token, so both learn that the player left. /legacy/draw is
cooperative (the default): nothing stops behind the code's back, all five rounds run for nobody,
and the 499 line comes after 5 s. /legacy/draw-preemptive adds ``Depends(preemptive)``: the
``await`` in progress is cancelled the moment the player leaves, and the 499 line comes at once.
Close each tab early and compare the "drew N of 5 rounds" lines in the log.
"""

import logging
import random

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from fastapi_abort import RequestAborted, preemptive

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/legacy", tags=["legacy"])

ROUNDS = 5
PAUSE = 1.0  # seconds per round

PAGE = f"""<!doctype html>
<title>Legacy draws</title>
<h1>Legacy draws</h1>
<p>The same old draw code ({ROUNDS} rounds, {PAUSE:g} s each), which never checks a token. Each
link opens it in a new tab: close the tab after a round or two, and watch the log and the panel.
</p>
<ul>
  <li><a href="/legacy/draw" target="_blank">Cooperative draw</a>: runs all {ROUNDS} rounds
    anyway.</li>
  <li><a href="/legacy/draw-preemptive" target="_blank">Preemptive draw</a>: stops at once.</li>
</ul>
"""


async def legacy_draw(name: str) -> int:
    """The draw as it was written before there was a token: it only awaits ``anyio.sleep()``.

    Under ``Depends(preemptive)``, the sleep in progress is cancelled and the ``finally`` block
    runs (as for any cancellation), so the log says how many rounds were drawn either way.
    """
    drawn = lucky = 0
    try:
        for round_ in range(1, ROUNDS + 1):
            logger.info("%s: round %d of %d", name, round_, ROUNDS)
            lucky = random.randint(0, 999)
            await anyio.sleep(PAUSE)
            drawn += 1
    finally:
        logger.info("%s: drew %d of %d rounds", name, drawn, ROUNDS)
    return lucky


def lucky_page(lucky: int) -> str:
    return f"<!doctype html><title>Your lucky number</title><p>Your lucky number: {lucky}</p>"


@router.get("", response_class=HTMLResponse)
async def page() -> str:
    return PAGE


@router.get("/draw", response_class=HTMLResponse)
async def cooperative_draw(ct: RequestAborted) -> str:
    lucky = await legacy_draw("cooperative draw")
    # The token knew all along; the legacy code never asked it.
    logger.info("cooperative draw: finished; player gone: %s", ct.is_cancellation_requested)
    return lucky_page(lucky)


@router.get("/draw-preemptive", response_class=HTMLResponse, dependencies=[Depends(preemptive)])
async def preemptive_draw() -> str:
    return lucky_page(await legacy_draw("preemptive draw"))
