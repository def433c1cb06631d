"""A streaming draw: server-sent events, one lucky number every half second.

The generator sleeps on the token between draws, so it stops generating the moment the client
leaves, even in the middle of a pause: the case that matters for LLM-style streaming, where each
chunk costs money. Open /stream and close the tab: the log says how many draws were sent.
"""

import logging
import random
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, StreamingResponse

from fastapi_abort import RequestAborted

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/stream", tags=["stream"])

DRAWS = 20
PAUSE = 0.5  # seconds between draws

PAGE = """<!doctype html>
<title>Streaming draw</title>
<h1>Streaming draw</h1>
<p>A new lucky number every half second, twenty in all. Close the tab and the server stops.</p>
<ol id="draws"></ol>
<script>
const source = new EventSource("/stream/draws");
source.addEventListener("draw", (event) => {
  const item = document.createElement("li");
  item.textContent = event.data;
  document.getElementById("draws").append(item);
});
source.addEventListener("end", () => source.close());
</script>
"""


@router.get("", response_class=HTMLResponse)
async def page() -> str:
    return PAGE


@router.get("/draws", response_class=StreamingResponse)
async def draws(ct: RequestAborted) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        sent = 0
        try:
            for _ in range(DRAWS):
                yield f"event: draw\ndata: {random.randint(0, 999)}\n\n"
                sent += 1
                await ct.sleep(PAUSE)  # raises OperationCancelled the moment the client leaves
            yield "event: end\ndata: \n\n"
        finally:
            logger.info("stream ended after %d of %d draws", sent, DRAWS)

    return StreamingResponse(events(), media_type="text/event-stream")
