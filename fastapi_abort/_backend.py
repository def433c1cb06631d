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
import math
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from contextvars import Context, copy_context
from typing import Any, Protocol

NO_EVENT_LOOP = (
    "{what} must run on an asyncio or trio event loop, and none is running in this thread. "
    "In a worker thread, use the blocking forms instead (wait_blocking(), sleep_blocking(), "
    "throw_if_cancellation_requested())."
)

CallSoon = Callable[[Callable[[], object]], object]


def _trio() -> Any:
    # Imported lazily and only if already imported by someone else: trio is not a dependency.
    return sys.modules.get("trio")


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running in this thread, or ``None`` (trio, or no loop at all)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def on_event_loop() -> bool:
    """Whether an asyncio or trio event loop runs in this thread (worker threads have none)."""
    if asyncio._get_running_loop() is not None:
        return True
    trio = _trio()
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


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


class Cancellable(Protocol):
    def cancel(self) -> object: ...


class Spawned:
    """A background task started without a task group; ``cancel()`` stops it soon.

    ``cancel()`` is idempotent and drops every reference the handle holds: the task refers back
    to the request's state, and a cycle left behind would leave each request to the cyclic
    garbage collector.
    """

    __slots__ = ("_cancel",)

    def __init__(self, cancel: Callable[[], object] | None = None) -> None:
        self._cancel = cancel

    def cancel(self) -> None:
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()


def spawn(func: Callable[[], Coroutine[Any, Any, None]], name: str) -> Cancellable:
    """Start ``func()`` as a background task on the running loop; return what cancels it.

    On asyncio that is the task itself. ``func`` must handle its own exceptions: on trio it runs
    as a system task, where an escaping exception would crash the whole run.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        return loop.create_task(func(), name=name)
    trio = _trio()
    if trio is None:  # pragma: no cover - anyio runs only on asyncio and trio
        raise RuntimeError(NO_EVENT_LOOP.format(what="The request watcher"))
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await func()

    trio.lowlevel.spawn_system_task(run, name=name)
    return Spawned(scope.cancel)


class Delayed(Protocol):
    def delay_passed(self, context: Context) -> None: ...


class DelayBatch:
    """Calls ``item.delay_passed(context)`` ``delay`` seconds after ``call_after_delay()``
    added it, unless it was taken out of ``pending`` first, with one loop timer for all the
    items whose time has come.

    ``context`` is a copy of the context the item was added in, as a timer started then
    would have run in. Why not a timer per item: on uvloop a ``TimerHandle`` and a libuv timer,
    created, then cancelled as nearly every request ends within the delay, cost more than the
    rest of a request's token. Why take items out (``pending.pop(item, None)``, written inline:
    a method call around it would cost as much again) rather than skip them when due: an
    item held past its request's end outlives the collector's young-generation passes, with
    everything it refers to, and the full collections that follow cost more than the timers
    saved (measured under wrk: about 3 microseconds of CPU per request).
    """

    __slots__ = ("_delay", "_timer", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self._delay = delay
        # In insertion order, which is the order of due times: one delay per batch.
        self.pending: dict[Delayed, tuple[float, Context]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def _fire(self) -> None:
        # Due times are read on time.monotonic(), not on the loop's clock: uvloop's counts whole
        # milliseconds, and a timer set on it may fire up to a millisecond early, which would
        # start a watcher before its request's delay has passed. Within a microsecond of due
        # counts as due (asyncio may fire a timer a clock resolution early).
        now = time.monotonic() + 1e-6
        pending = self.pending
        ready = []
        for item, (due, context) in pending.items():
            if due > now:
                break
            ready.append((item, context))
        for item, _ in ready:
            del pending[item]
        self._timer = None
        if pending:
            due, _ = next(iter(pending.values()))
            self._timer = self.loop.call_later(_timer_delay(due - now), self._fire)
        for item, context in ready:
            item.delay_passed(context)


def _timer_delay(seconds: float) -> float:
    # In whole milliseconds, rounded up: uvloop rounds a delay to the nearest millisecond, and
    # a timer that fires before the first item is due only sets another one.
    return math.ceil(seconds * 1000) / 1000


_batches = threading.local()
#: The batch used last, in whichever thread: most processes run one loop and one delay, and
#: this skips the thread-local lookup for them.
_last: DelayBatch | None = None


def call_after_delay(item: Delayed, delay: float) -> DelayBatch | None:
    """Call ``item.delay_passed(context)`` ``delay`` seconds from now, on the running asyncio
    loop. Returns the batch: ``batch.pending.pop(item, None)`` cancels the call.

    Returns ``None`` (and does nothing) when no asyncio loop runs in this thread.
    """
    global _last
    loop = asyncio._get_running_loop()
    if loop is None:
        return None
    batch = _last
    if batch is None or batch.loop is not loop or batch._delay != delay:
        # One batch per thread and delay: a loop runs in one thread, and the batch of a loop
        # that has been replaced (a new loop in the same thread) is dropped with it.
        batches: dict[float, DelayBatch] | None = getattr(_batches, "by_delay", None)
        if batches is None:
            batches = _batches.by_delay = {}
        batch = batches.get(delay)
        if batch is None or batch.loop is not loop:
            batch = batches[delay] = DelayBatch(loop, delay)
        _last = batch
    batch.pending[item] = (time.monotonic() + delay, copy_context())
    if batch._timer is None:
        batch._timer = loop.call_later(_timer_delay(delay), batch._fire)
    return batch
