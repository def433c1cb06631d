"""The little that must be done per event-loop backend.

anyio has no public way to schedule a call on a loop from another thread without blocking, or to
start a task without a task group. Both matter here: a token may be cancelled from any thread and
must wake waiters on their own loop without blocking the cancelling thread, and the request watcher
must not cost every request a task group (a task group per request measured at 0.40x the
throughput of plain FastAPI). So this module speaks to asyncio and trio directly, and to nothing
else.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

NO_EVENT_LOOP = (
    "{what} must run on an asyncio or trio event loop, and none is running in this thread. "
    "In a worker thread, use the blocking forms instead (wait_blocking(), sleep_blocking(), "
    "throw_if_cancellation_requested())."
)

CallSoon = Callable[[Callable[[], object]], object]


def _trio() -> Any:
    # Imported lazily and only if already imported by someone else: trio is not a dependency.
    return sys.modules.get("trio")


def call_soon_threadsafe(what: str) -> CallSoon:
    """Return a function that schedules a callback on the running loop, from any thread.

    :raises RuntimeError: if no asyncio or trio loop runs in this thread.
    """
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:
        pass
    trio = _trio()
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token().run_sync_soon  # type: ignore[no-any-return]
        except RuntimeError:
            pass
    raise RuntimeError(NO_EVENT_LOOP.format(what=what))


def call_later(delay: float, callback: Callable[[], object]) -> Callable[[], object] | None:
    """Run ``callback`` after ``delay`` seconds on the running asyncio loop.

    Returns a function that cancels the call, or ``None`` when no asyncio loop runs in this
    thread (the caller then falls back to a timer thread).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(delay, callback).cancel


class Spawned:
    """A background task started without a task group; ``cancel()`` stops it soon.

    ``cancel()`` is idempotent and drops every reference the handle holds: the timer and the task
    refer back to the request's state, and a cycle left behind would leave each request to the
    cyclic garbage collector.
    """

    __slots__ = ("_cancel",)

    def __init__(self, cancel: Callable[[], object] | None = None) -> None:
        self._cancel = cancel

    def cancel(self) -> None:
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()


class _Delayed(Spawned):
    """An asyncio task that is created only once ``delay`` has passed, if not cancelled first."""

    __slots__ = ("_func", "_loop", "_name")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: float,
        func: Callable[[], Coroutine[Any, Any, None]],
        name: str,
    ) -> None:
        self._loop, self._func, self._name = loop, func, name
        super().__init__(loop.call_later(delay, self._start).cancel)

    def _start(self) -> None:
        func, self._func = self._func, None  # type: ignore[assignment]
        if self._cancel is not None:
            self._cancel = self._loop.create_task(func(), name=self._name).cancel

    def cancel(self) -> None:
        self._func = None  # type: ignore[assignment]
        super().cancel()


def spawn(func: Callable[[], Coroutine[Any, Any, None]], name: str, delay: float = 0.0) -> Spawned:
    """Start ``func()`` as a background task on the running loop, ``delay`` seconds from now.

    On asyncio, a task cancelled before its delay is up is never created at all (a timer handle
    costs far less than a task). On trio the task starts at once, whatever the delay. ``func``
    must handle its own exceptions: on trio it runs as a system task, where an escaping
    exception would crash the whole run.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        if delay > 0:
            return _Delayed(loop, delay, func, name)
        return Spawned(loop.create_task(func(), name=name).cancel)
    trio = _trio()
    if trio is None:  # pragma: no cover - anyio runs only on asyncio and trio
        raise RuntimeError(NO_EVENT_LOOP.format(what="The request watcher"))
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await func()

    trio.lowlevel.spawn_system_task(run, name=name)
    return Spawned(scope.cancel)
