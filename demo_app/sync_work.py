"""Synchronous work: a ``def`` endpoint, run by FastAPI in a worker thread.

A thread cannot be interrupted, so the endpoint checks the token at the start of each of its ten
blocking one-second steps. Open /sync and close the tab: the step in progress ends, and no
further step starts.
"""

import logging
import time

from fastapi import APIRouter

from fastapi_abort import RequestAborted

logger = logging.getLogger(__name__)

router = APIRouter(tags=["sync"])

STEPS = 10
STEP = 1.0  # seconds


@router.get("/sync")
def sync_work(ct: RequestAborted) -> dict[str, int]:
    for step in range(1, STEPS + 1):
        ct.throw_if_cancellation_requested()
        logger.info("step %d of %d", step, STEPS)
        time.sleep(STEP)  # blocking work that cannot be interrupted
    return {"steps": STEPS}
