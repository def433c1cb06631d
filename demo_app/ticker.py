"""A WebSocket ticker: a new draw every half second, pushed to the page.

The endpoint only sends: it never calls ``receive()``, so on its own it would not learn that the
page was closed until a send failed. It gets the same token as an HTTP endpoint, and
``ct.sleep()`` raises ``OperationCancelled`` the moment the peer leaves (a closed tab, or a
click to another page). fastapi-abort ends the connection quietly (a peer that leaves is a
WebSocket's normal end: no 499 line), and the log says "ticker stopped after draw N: client
disconnected". The token is linked with the app's stopping token (``StopOnShutdown``): when the
server starts to shut down (Ctrl+C), the ticker closes the connection at once as "going away"
(1001), instead of keeping uvicorn waiting for its five minutes.
"""

import logging
import random

from fastapi import APIRouter, WebSocket
from fastapi.responses import HTMLResponse

from fastapi_abort import CancellationReason, OperationCancelled, StopOnShutdown

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/ticker", tags=["ticker"])

DRAWS = 600  # five minutes, then the server closes the connection itself
PAUSE = 0.5  # seconds between draws
GOING_AWAY = 1001  # the close code at shutdown (RFC 6455)

PAGE = """<!doctype html>
<title>Draw ticker</title>
<h1>Draw ticker</h1>
<p>A WebSocket pushes a new lucky number every half second. Close the tab, or go
<a href="/">back to the index</a>, and the server stops the ticker.</p>
<p id="state">connecting</p>
<ol id="draws" reversed></ol>
<script>
const socket = new WebSocket(`ws://${location.host}/ticker/draws`);
socket.onopen = () => { document.getElementById("state").textContent = "open"; };
socket.onclose = (event) => {
  document.getElementById("state").textContent = `closed (${event.code})`;
};
socket.onmessage = (event) => {
  const draw = JSON.parse(event.data);
  const item = document.createElement("li");
  item.textContent = `draw ${draw.draw}: ${draw.number}`;
  document.getElementById("draws").prepend(item);
};
</script>
"""


@router.get("", response_class=HTMLResponse)
async def page() -> str:
    return PAGE


@router.websocket("/draws")
async def draws(websocket: WebSocket, ct: StopOnShutdown) -> None:
    await websocket.accept()
    sent = 0
    logger.info("ticker started")
    try:
        while sent < DRAWS:
            await websocket.send_json({"draw": sent + 1, "number": random.randint(0, 999)})
            sent += 1
            # Raises OperationCancelled the moment the peer leaves, or shutdown starts.
            await ct.sleep(PAUSE)
        await websocket.close()
    except OperationCancelled:
        if ct.reason is not CancellationReason.SHUTDOWN:
            raise  # the peer left: fastapi-abort ends the connection quietly
        await websocket.close(GOING_AWAY, "server restarting")
    finally:
        logger.info("ticker stopped after draw %d: %s", sent, ct.reason or "all sent")
