"""Waking what waits on a token, from whichever thread cancels it: callbacks, and event loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import final

from ._backend import CallSoon, running_asyncio_loop

logger = logging.getLogger("fastapi_abort")

CALLBACK_FAILED = "Cancellation callback %r raised; the other callbacks still ran"


def run_callback(callback: Callable[[], object]) -> None:
    """Call a registered callback; one that raises is logged and does not stop the others."""
    try:
        callback()
    except Exception:
        logger.exception(CALLBACK_FAILED, callback)


@final
class WakeFuture:
    """Resolve an asyncio future on its own loop, whichever thread calls this."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    def __call__(self) -> None:
        future = self._future
        loop = future.get_loop()
        if running_asyncio_loop() is loop:
            _resolve(future)
            return
        # RuntimeError: the loop has closed, and nothing is left waiting on it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the waiter may have been cancelled meanwhile
        future.set_result(None)


def on_loop(func: Callable[[], object], call_soon: CallSoon) -> Callable[[], None]:
    """Wrap ``func`` so that it runs on the current loop, whichever thread calls the wrapper.

    Called from the loop's own thread, ``func`` runs at once; from any other thread, it is
    scheduled on the loop with ``call_soon`` without blocking the caller.
    """
    loop_thread = threading.get_ident()

    def wake() -> None:
        if threading.get_ident() == loop_thread:
            func()
            return
        # RuntimeError: the loop has closed, and nothing is left waiting on it.
        with contextlib.suppress(RuntimeError):
            call_soon(func)

    return wake
