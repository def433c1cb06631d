"""Ten seconds of work, twice: refresh each page while it loads, and compare the logs.

/slow/naive waits without the token: every refresh leaves a wait running for nobody, and each
one logs "finished" 10 s after it started. /slow waits with the token: a refresh stops the old
wait at once, and the log shows one quiet 499 line for it instead.
"""

import logging

import anyio
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fastapi_abort import RequestAborted

logger = logging.getLogger(__name__)

router = APIRouter(tags=["slow"])

WORK = 10  # seconds


@router.get("/slow/naive", response_class=HTMLResponse)
async def naive() -> str:
    await anyio.sleep(WORK)
    logger.info("/slow/naive finished after %d s", WORK)
    return f"<!doctype html><title>Done</title><p>Done after {WORK} s, without the token.</p>"


@router.get("/slow", response_class=HTMLResponse)
async def slow(ct: RequestAborted) -> str:
    # Raises OperationCancelled the moment the client leaves; the handler install() added turns
    # it into an empty 499 response and the middleware logs one quiet line.
    await ct.sleep(WORK)
    logger.info("/slow finished after %d s", WORK)
    return f"<!doctype html><title>Done</title><p>Done after {WORK} s, with the token.</p>"
