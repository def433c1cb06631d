"""How a token's state changes: deadlines (``cancel_after``, ``timeout=``) and their timers, and
the races between threads that change it at once.

A few tests are about the asyncio loop's own timer and run on asyncio only (on trio the deadline
timer is a thread, which may fire at any time, so those tests could not tell the paths apart).
Each race test forces one interleaving of threads that an earlier version got wrong.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
import types
from collections.abc import Callable
from types import SimpleNamespace

import anyio
import anyio.to_thread
import pytest

import fastapi_abort._waiting as waiting_module
from fastapi_abort import (
    CancellationReason,
    CancellationTokenSource,
    OperationCancelled,
    _lifecycle,
    _token,
)
from fastapi_abort._checks import BAD_SECONDS
from fastapi_abort._source import BAD_DELAY
from tests.support import (
    WAIT,
    asyncio_only,
    new_timer_threads,
    probe_blocking_waits,
)

DEADLINE = CancellationReason.DEADLINE
EXPLICIT = CancellationReason.EXPLICIT


# -- cancel_after and timeout= -----------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_after_trips_with_reason_deadline() -> None:
    with CancellationTokenSource() as source:
        calls: list[str] = []
        source.token.register(lambda: calls.append("ran"))
        source.cancel_after(0.05)
        with anyio.fail_after(WAIT):
            await source.token.wait()
        assert source.token.reason is DEADLINE
        assert calls == ["ran"]


@pytest.mark.anyio
async def test_timeout_argument_trips_with_reason_deadline() -> None:
    parent = CancellationTokenSource()
    with CancellationTokenSource(parent.token, timeout=0.05) as source:
        with anyio.fail_after(WAIT):
            await source.token.wait()
        assert source.token.reason is DEADLINE
        assert parent.token.is_cancellation_requested is False


@pytest.mark.anyio
async def test_cancel_after_replaces_the_deadline_with_a_later_one() -> None:
    with CancellationTokenSource() as source:
        source.cancel_after(0.2)
        source.cancel_after(1.2)
        # Well past the first deadline, well before the second.
        with anyio.move_on_after(0.5) as early:
            await source.token.wait()
        assert early.cancelled_caught, "the token tripped at the deadline that was replaced"
        with anyio.fail_after(WAIT):
            await source.token.wait()
        assert source.token.reason is DEADLINE


@pytest.mark.anyio
async def test_cancel_after_replaces_the_deadline_with_an_earlier_one() -> None:
    with CancellationTokenSource(timeout=30) as source:
        source.cancel_after(0.01)
        with anyio.fail_after(WAIT):
            await source.token.wait()
        assert source.token.reason is DEADLINE


@pytest.mark.parametrize("delay", [-1, -0.001, math.nan, -math.inf, "1", True], ids=repr)
def test_cancel_after_rejects_a_bad_delay(delay: object) -> None:
    message = re.escape(BAD_DELAY.format(delay=delay))
    with CancellationTokenSource() as source:
        with pytest.raises(ValueError, match=message):
            source.cancel_after(delay)  # type: ignore[arg-type]
        assert source.token._deadline is None
        assert source.token.wait_blocking(0) is False
    with pytest.raises(ValueError, match=message):
        CancellationTokenSource(timeout=delay)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_cancel_after_infinity_removes_the_deadline() -> None:
    with CancellationTokenSource(timeout=0.05) as source:
        source.cancel_after(math.inf)
        assert source.token._deadline is None
        assert source.token._timer is None
        # Well past the removed deadline: bounded, and the token must still be uncancelled.
        with anyio.move_on_after(0.2) as waited:
            await source.token.wait()
        assert waited.cancelled_caught
        assert source.token.is_cancellation_requested is False
        source.cancel_after(0)
        assert source.token.is_cancellation_requested is True
        assert source.token.reason is DEADLINE


def test_a_source_made_with_an_infinite_timeout_has_no_deadline() -> None:
    with CancellationTokenSource(timeout=math.inf) as source:
        assert source.token._deadline is None
        assert source.token.wait_blocking(0) is False


@pytest.mark.anyio
@asyncio_only
async def test_passed_deadline_is_seen_even_when_the_loop_never_ran_its_timer(
    anyio_backend: str,
) -> None:
    with CancellationTokenSource() as source:
        calls: list[str] = []
        source.token.register(lambda: calls.append("ran"))
        start = time.monotonic()
        source.cancel_after(0.05)
        # Busy on the loop thread, never awaiting: the loop cannot run the deadline timer.
        while time.monotonic() < start + 0.1:
            pass
        assert calls == [], "the loop ran its timer: this test proves nothing"
        assert source.token.is_cancellation_requested is True
        assert source.token.reason is DEADLINE
        assert calls == ["ran"]
        with pytest.raises(OperationCancelled):
            source.token.throw_if_cancellation_requested()


def test_cancel_after_outside_an_event_loop_uses_a_timer_thread() -> None:
    with CancellationTokenSource() as source:
        fired = threading.Event()
        ran_in: list[threading.Thread] = []

        def on_cancel() -> None:
            ran_in.append(threading.current_thread())
            fired.set()

        source.token.register(on_cancel)
        source.cancel_after(0.05)
        # Set by the timer itself: nothing here reads the token's state.
        assert fired.wait(WAIT)
        (timer,) = ran_in
        assert isinstance(timer, threading.Timer)
        assert timer is not threading.current_thread()
        assert source.token.wait_blocking(WAIT) is True
        assert source.token.reason is DEADLINE
    timer.join(WAIT)
    assert not timer.is_alive()


def test_close_stops_the_timer_thread() -> None:
    before = set(threading.enumerate())
    source = CancellationTokenSource()
    source.cancel_after(30)
    timers = new_timer_threads(before)
    assert len(timers) == 1
    source.close()
    # A 30 s timer thread ends this early only if it was cancelled.
    timers[0].join(WAIT)
    assert not timers[0].is_alive()
    assert new_timer_threads(before) == []
    assert source.token.is_cancellation_requested is False
    assert source.token.wait_blocking(0) is False


def test_replacing_the_deadline_stops_the_earlier_timer_thread() -> None:
    before = set(threading.enumerate())
    with CancellationTokenSource() as source:
        source.cancel_after(30)
        (first,) = new_timer_threads(before)
        source.cancel_after(20)
        first.join(WAIT)
        assert not first.is_alive()
        assert len(new_timer_threads(before)) == 1
    for thread in new_timer_threads(before):
        thread.join(WAIT)
    assert new_timer_threads(before) == []


def test_cancel_after_on_a_cancelled_or_closed_token_starts_no_timer() -> None:
    before = set(threading.enumerate())
    cancelled = CancellationTokenSource()
    cancelled.cancel()
    cancelled.cancel_after(30)
    closed = CancellationTokenSource()
    closed.close()
    closed.cancel_after(30)
    assert new_timer_threads(before) == []
    assert cancelled.token.reason is EXPLICIT
    assert closed.token.is_cancellation_requested is False


@pytest.mark.anyio
@asyncio_only
async def test_close_stops_the_loop_timer(anyio_backend: str) -> None:
    source = CancellationTokenSource()
    source.cancel_after(0.05)
    source.close()  # before this test awaits anything: the timer cannot have fired
    loop = asyncio.get_running_loop()
    later = asyncio.Event()
    loop.call_later(0.1, later.set)  # runs after the 0.05 s timer would have
    with anyio.fail_after(WAIT):
        await later.wait()
    assert source.token.is_cancellation_requested is False
    assert source.token.reason is None


# -- races and edge cases ---------------------------------------------------------------------


def test_wait_blocking_without_timeout_is_not_cut_short_when_the_deadline_is_extended() -> None:
    # A thread blocks in wait_blocking() with a 0.1 s deadline; the deadline is then moved later
    # (cancel_after() "replaces the earlier deadline"). The thread must not return at the old
    # deadline with False (a wait without timeout that returns while the token is not cancelled),
    # but keep waiting and return True at the new one.
    with CancellationTokenSource(timeout=0.1) as source:
        probe = probe_blocking_waits(source.token)
        probe.release.clear()
        results: list[bool] = []
        waiter = threading.Thread(
            target=lambda: results.append(source.token.wait_blocking()), daemon=True
        )
        waiter.start()
        assert probe.entered.wait(WAIT)  # the waiter has read the 0.1 s deadline
        source.cancel_after(1.0)
        probe.release.set()
        waiter.join(WAIT)
        assert not waiter.is_alive()
        assert results == [True], "wait_blocking() returned before the token was cancelled"
        assert source.token.reason is DEADLINE


def test_reading_the_token_while_another_thread_closes_its_source_does_not_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A reader checks the deadline (is it set? has it passed?) while another thread closes the
    # source, which clears the deadline. Reading it twice, once before and once after the close,
    # raised TypeError (float >= None). The close runs, in another thread, exactly during the
    # time.monotonic() call of the check.
    source = CancellationTokenSource(timeout=30)
    real_monotonic = time.monotonic
    closed: list[bool] = []

    def monotonic() -> float:
        if not closed:
            closed.append(True)
            closer = threading.Thread(target=source.close)
            closer.start()
            closer.join(WAIT)
        return real_monotonic()

    monkeypatch.setattr(_token, "time", types.SimpleNamespace(monotonic=monotonic))
    try:
        assert source.token.is_cancellation_requested is False
    finally:
        source.close()
    assert closed == [True]
    assert source.token.can_be_cancelled is False


def test_concurrent_cancel_after_calls_leave_a_timer_that_matches_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two threads call cancel_after(): A with 30 s, then B with 0.05 s. If A arms its timer
    # outside the lock, B gets in between: A sets its deadline, B sets its deadline, A stores its
    # timer, B finds a timer stored and stops its own. The token's deadline would be B's and its
    # timer A's: the deadline passes (a read says cancelled) but callbacks and async waiters are
    # not woken for 30 s. Whatever the order, the deadline and the timer must go together.
    source = CancellationTokenSource()
    fired = threading.Event()
    source.token.register(fired.set)
    b_arming = threading.Event()
    release_b = threading.Event()
    calls: list[float] = []

    def call_later(delay: float, callback: Callable[[], object]) -> None:
        calls.append(delay)
        if len(calls) == 1:  # A, arming its timer
            thread_b.start()
            if not _lifecycle.lock.locked():  # A arms outside the lock: let B get this far
                assert b_arming.wait(WAIT)
        else:  # B, arming its timer; held until A's cancel_after() has returned
            b_arming.set()
            assert release_b.wait(WAIT)
        return None  # no loop here: a timer thread, as in any plain thread

    thread_b = threading.Thread(target=source.cancel_after, args=(0.05,), daemon=True)
    monkeypatch.setattr(_lifecycle, "call_later", call_later)
    try:
        source.cancel_after(30)  # A
        release_b.set()
        thread_b.join(WAIT)
        assert not thread_b.is_alive()
        assert calls == [30, 0.05]
        timer_ran = fired.wait(WAIT)  # set only by a timer: nothing reads the token before
        deadline_passed = source.token.is_cancellation_requested
        assert timer_ran == deadline_passed, (
            f"deadline passed: {deadline_passed}, timer fired: {timer_ran}"
        )
        assert timer_ran  # B was called last: its deadline is the one that counts
    finally:
        source.close()


def test_a_replaced_timer_that_fires_anyway_does_not_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A timer may already be firing, in its own thread, when cancel_after() replaces it: too late
    # to stop it. It must not cancel the token: only the latest deadline counts.
    fires: list[Callable[[], object]] = []

    def call_later(delay: float, callback: Callable[[], object]) -> Callable[[], object]:
        fires.append(callback)
        return lambda: None  # a stop that comes too late

    monkeypatch.setattr(_lifecycle, "call_later", call_later)
    with CancellationTokenSource() as source:
        source.cancel_after(30)
        source.cancel_after(60)
        first, second = fires
        first()
        assert source.token.is_cancellation_requested is False
        second()
        assert source.token.reason is DEADLINE


def test_wait_blocking_rejects_nan_instead_of_spinning() -> None:
    # A `timeout < 0` check lets nan through, and the wait loop then never ends
    # (`time.monotonic() >= nan` is never true) and spins a CPU at 100 %. nan is not a number of
    # seconds >= 0: it raises the BAD_SECONDS ValueError, like a negative timeout does. Run in a
    # thread, so that a regression fails here instead of hanging the run.
    source = CancellationTokenSource()
    outcome: list[BaseException | bool] = []

    def run() -> None:
        try:
            outcome.append(source.token.wait_blocking(math.nan))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT)
    spinning = thread.is_alive()
    source.cancel()  # lets a spinning thread out
    thread.join(WAIT)
    assert not spinning, "wait_blocking(nan) never returned"
    (result,) = outcome
    assert isinstance(result, ValueError)
    assert str(result) == BAD_SECONDS.format(what="wait_blocking", seconds=math.nan)


@pytest.mark.parametrize("method", ["wait_blocking", "sleep_blocking"])
def test_blocking_wait_of_infinity_waits_until_cancelled(method: str) -> None:
    # An infinite number of seconds is a valid wait (>= 0), meaning "until cancelled", like
    # timeout=None; handed as it is to threading.Event.wait(), it raised OverflowError.
    source = CancellationTokenSource()
    probe = probe_blocking_waits(source.token)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(getattr(source.token, method)(math.inf))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert probe.entered.wait(WAIT)
    source.cancel()
    thread.join(WAIT)
    assert not thread.is_alive()
    (result,) = outcome
    if method == "wait_blocking":
        assert result is True
    else:
        assert isinstance(result, OperationCancelled), repr(result)


def test_register_after_a_passed_deadline_runs_the_callback_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A timer that never fires: only the deadline itself can tell that the token is cancelled.
    monkeypatch.setattr(_lifecycle, "_timer_thread", lambda delay, fire: lambda: None)
    source = CancellationTokenSource()
    source.cancel_after(0)
    ran: list[str] = []
    registration = source.token.register(lambda: ran.append("ran"))
    assert ran == ["ran"]
    assert not registration.unregister()
    assert source.token.reason is CancellationReason.DEADLINE


def test_wait_blocking_sees_a_cancellation_that_lands_as_it_starts_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = CancellationTokenSource()

    def event_made_as_the_token_is_cancelled() -> threading.Event:
        source.cancel()  # between wait_blocking()'s first check and its lock
        return threading.Event()

    fake = SimpleNamespace(**vars(threading))
    fake.Event = event_made_as_the_token_is_cancelled
    monkeypatch.setattr(waiting_module, "threading", fake)
    # A wait that would block for the whole timeout if the cancellation were missed.
    assert source.token.wait_blocking(WAIT) is True


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the bare future is asyncio's
async def test_a_waiter_cancelled_before_its_wakeup_runs_is_left_alone(
    anyio_backend: str,
) -> None:
    source = CancellationTokenSource()
    task = asyncio.ensure_future(source.token.wait())
    await anyio.wait_all_tasks_blocked()
    # From another thread: the wakeup is scheduled on the loop, not run yet...
    thread = threading.Thread(target=source.cancel)
    thread.start()
    thread.join(WAIT)
    # ... and the waiter is cancelled before the loop gets to it.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await anyio.sleep(0)  # the wakeup runs now, and finds its waiter gone
    assert source.token.is_cancellation_requested
