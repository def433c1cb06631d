"""A draw against the clock: the lottery's five rounds under a 2 s deadline.

The full draw takes 2.5 s, so its deadline always passes first: the token trips with reason
"deadline", ``ct.sleep()`` raises ``OperationCancelled``, and the player, still waiting, gets a
504 ``application/problem+json`` response (fastapi-abort logs it at WARNING). A quick pick (one
round, 0.5 s) finishes in time. The page /deadline fetches either and shows what came back.
"""

import logging
import random
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from fastapi_abort import OperationCancelled, RequestAborted, deadline

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/deadline", tags=["deadline"])

LIMIT = 2  # seconds, counted from the start of the request
ROUNDS = 5
PAUSE = 0.5  # seconds between draws: five rounds take 2.5 s, past the limit

PAGE = f"""<!doctype html>
<title>Draw against the clock</title>
<h1>Draw against the clock</h1>
<p>The shop gives every draw {LIMIT} s. A quick pick takes {PAUSE:g} s; the full draw takes
{ROUNDS * PAUSE:g} s, so the server stops it at {LIMIT} s and answers 504 Gateway Timeout with
a problem details body (<a href="/deadline/draw">see it raw</a>: the browser shows the JSON).</p>
<p><button data-rounds="1">Quick pick</button> <button data-rounds="{ROUNDS}">Full draw</button>
</p>
<p id="result"></p>
<pre id="raw"></pre>
"""

SCRIPT = """<script>
const result = document.getElementById("result");
const raw = document.getElementById("raw");
async function play(rounds) {
  result.textContent = "Drawing…";
  raw.textContent = "";
  const response = await fetch(`/deadline/draw?rounds=${rounds}`);
  const type = response.headers.get("content-type");
  const body = await response.json();
  result.textContent = response.ok
    ? `Your lucky number: ${body.lucky}`
    : `${body.status} ${body.title}: ${body.detail}`;
  raw.textContent = `HTTP ${response.status}, ${type}\n${JSON.stringify(body, null, 1)}`;
}
for (const button of document.querySelectorAll("button[data-rounds]")) {
  button.onclick = () => play(Number(button.dataset.rounds));
}
</script>
"""


@router.get("", response_class=HTMLResponse)
async def page() -> str:
    return PAGE + SCRIPT


@router.get(
    "/draw",
    dependencies=[Depends(deadline(LIMIT))],
    responses={504: {"description": "The draw did not finish within its deadline."}},
)
async def draw(
    ct: RequestAborted, rounds: Annotated[int, Query(ge=1, le=ROUNDS)] = ROUNDS
) -> dict[str, int]:
    drawn = lucky = 0
    try:
        for _ in range(rounds):
            lucky = random.randint(0, 999)
            await ct.sleep(PAUSE)  # raises OperationCancelled when the deadline passes
            drawn += 1
    except OperationCancelled as exc:
        # Re-raised: install()'s handler turns it into the 504 (or the 499 if the player left).
        logger.info("draw stopped after %d of %d rounds: %s", drawn, rounds, exc.reason)
        raise
    return {"lucky": lucky, "rounds": rounds}
