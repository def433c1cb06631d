"""Unit tests of the cancellation token, its source, its registrations and OperationCancelled.

Async tests run on both asyncio and trio. Nothing sleeps to wait for something to happen: every
wait is on an event, bounded by a generous timeout, so the tests hold on a loaded machine. A few
tests that are about the asyncio loop's own timer run on asyncio only (on trio the deadline timer
is a thread, which may fire at any time, so those tests could not tell the paths apart).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
import types
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
import pytest
import trio
from anyio import wait_all_tasks_blocked

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenRegistration,
    CancellationTokenSource,
    OperationCancelled,
    _lifecycle,
    _token,
)
from fastapi_abort._backend import NO_EVENT_LOOP
from fastapi_abort._source import BAD_DELAY, NOT_CANCELLABLE_SOURCE
from fastapi_abort._token import BAD_SECONDS
from fastapi_abort._wake import CALLBACK_FAILED

#: Bound on every wait for something that should happen (seconds); never reached when it works.
WAIT = 5.0

DEADLINE = CancellationReason.DEADLINE
EXPLICIT = CancellationReason.EXPLICIT

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


class _Reason:
    """A reason of the caller's own, not a CancellationReason."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class _ProbeEvent(threading.Event):
    """Put in place of a token's thread event to see when a thread blocks in wait_blocking().

    ``entered`` is set when a thread starts waiting; the wait itself only starts once ``release``
    is set (it is set from the start unless a test clears it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def wait(self, timeout: float | None = None) -> bool:
        self.entered.set()
        assert self.release.wait(WAIT)
        return super().wait(timeout)


def _probe_blocking_waits(token: CancellationToken) -> _ProbeEvent:
    probe = _ProbeEvent()
    token._event = probe
    return probe


def _callbacks(token: CancellationToken) -> dict[CancellationTokenRegistration, None]:
    callbacks = token._callbacks
    assert callbacks is not None
    return callbacks


def _callbacks_or_empty(token: CancellationToken) -> dict[CancellationTokenRegistration, None]:
    return token._callbacks or {}


def _new_timer_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and isinstance(t, threading.Timer)]


# -- state -------------------------------------------------------------------------------------


def test_new_token_is_not_cancelled_and_can_be_cancelled() -> None:
    source = CancellationTokenSource()
    token = source.token
    assert token.is_cancellation_requested is False
    assert source.is_cancellation_requested is False
    assert token.can_be_cancelled is True
    assert token.reason is None
    token.throw_if_cancellation_requested()
    assert token.wait_blocking(0) is False
    assert source.token is token


def test_cancel_without_reason_sets_reason_explicit() -> None:
    source = CancellationTokenSource()
    source.cancel()
    assert source.token.is_cancellation_requested is True
    assert source.is_cancellation_requested is True
    assert source.token.reason is EXPLICIT
    assert source.token.can_be_cancelled is True


@pytest.mark.parametrize("reason", list(CancellationReason))
def test_cancel_with_a_reason_member_reports_that_member(reason: CancellationReason) -> None:
    source = CancellationTokenSource()
    source.cancel(reason)
    assert source.token.is_cancellation_requested is True
    assert source.token.reason is reason


def test_cancel_with_a_custom_reason_object_reports_that_object() -> None:
    source = CancellationTokenSource()
    reason = _Reason("shutting down")
    source.cancel(reason)
    assert source.token.reason is reason


def test_cancel_with_none_reason_raises_value_error_and_does_not_cancel() -> None:
    source = CancellationTokenSource()
    with pytest.raises(ValueError, match="reason"):
        source.cancel(None)
    assert source.token.is_cancellation_requested is False
    assert source.token.reason is None


def test_reason_members_print_as_their_value() -> None:
    assert str(CancellationReason.CLIENT_DISCONNECTED) == "client disconnected"
    assert str(DEADLINE) == "deadline"
    assert str(EXPLICIT) == "explicit"


def test_repr_shows_the_state() -> None:
    source = CancellationTokenSource()
    assert repr(source.token) == "<CancellationToken not cancelled>"
    assert repr(source) == "<CancellationTokenSource token=<CancellationToken not cancelled>>"
    source.cancel(_Reason("custom"))
    assert repr(source.token) == "<CancellationToken cancelled (custom)>"
    closed = CancellationTokenSource()
    closed.close()
    assert repr(closed.token) == "<CancellationToken never cancelled>"
    explicit = CancellationTokenSource()
    explicit.cancel()
    assert repr(explicit.token) == "<CancellationToken cancelled (explicit)>"


def test_none_token_never_cancels_and_cannot_be_cancelled() -> None:
    none = CancellationToken.NONE
    calls: list[str] = []
    registration = none.register(lambda: calls.append("ran"))
    none._cancel(EXPLICIT, none)  # what a source would do: a no-op on a closed token
    assert none.is_cancellation_requested is False
    assert none.can_be_cancelled is False
    assert none.reason is None
    assert repr(none) == "<CancellationToken never cancelled>"
    none.throw_if_cancellation_requested()
    assert none.wait_blocking(0.01) is False
    assert calls == []
    assert registration.unregister() is False
    assert none._callbacks is None  # nothing is kept for a callback that can never run


def test_source_linked_to_the_none_token_is_independent_of_it() -> None:
    with CancellationTokenSource(CancellationToken.NONE) as source:
        assert source.token._parents == ()
        source.cancel()
        assert source.token.is_cancellation_requested is True
    assert CancellationToken.NONE.is_cancellation_requested is False


# -- cancel and close --------------------------------------------------------------------------


def test_cancel_is_idempotent_and_the_first_reason_wins() -> None:
    source = CancellationTokenSource()
    calls: list[str] = []
    source.token.register(lambda: calls.append("ran"))
    first = _Reason("first")
    source.cancel(first)
    source.cancel(_Reason("second"))
    source.cancel()
    assert source.token.reason is first
    assert calls == ["ran"]


def test_cancel_after_close_does_nothing() -> None:
    source = CancellationTokenSource()
    calls: list[str] = []
    registration = source.token.register(lambda: calls.append("ran"))
    source.close()
    source.cancel()
    assert source.token.is_cancellation_requested is False
    assert source.token.reason is None
    assert calls == []
    # The callback will never run now: unregister() reports that it did not remove it.
    assert registration.unregister() is False


def test_close_keeps_a_cancelled_token_cancelled() -> None:
    source = CancellationTokenSource()
    reason = _Reason("done")
    source.cancel(reason)
    source.close()
    source.close()
    assert source.token.is_cancellation_requested is True
    assert source.token.reason is reason
    assert source.token.can_be_cancelled is True
    with pytest.raises(OperationCancelled):
        source.token.throw_if_cancellation_requested()


def test_closed_uncancelled_token_cannot_be_cancelled() -> None:
    source = CancellationTokenSource()
    source.close()
    assert source.token.can_be_cancelled is False
    assert source.token.is_cancellation_requested is False
    with CancellationTokenSource() as managed:
        assert managed.token.can_be_cancelled is True
    assert managed.token.can_be_cancelled is False


# -- throw_if_cancellation_requested and OperationCancelled --------------------------------------


def test_throw_if_cancellation_requested_raises_operation_cancelled_with_token_and_reason() -> None:
    source = CancellationTokenSource()
    reason = _Reason("the user pressed stop")
    source.cancel(reason)
    with pytest.raises(OperationCancelled) as info:
        source.token.throw_if_cancellation_requested()
    assert info.value.token is source.token
    assert info.value.reason is reason
    assert "the user pressed stop" in str(info.value)


def test_operation_cancelled_message_mentions_a_reason_member() -> None:
    source = CancellationTokenSource()
    source.cancel(CancellationReason.CLIENT_DISCONNECTED)
    with pytest.raises(OperationCancelled, match="client disconnected") as info:
        source.token.throw_if_cancellation_requested()
    assert info.value.reason is CancellationReason.CLIENT_DISCONNECTED
    assert str(OperationCancelled(source.token, "my own words")) == "my own words"


def test_operation_cancelled_is_an_exception_and_not_a_loop_cancellation() -> None:
    assert issubclass(OperationCancelled, Exception)
    assert not issubclass(OperationCancelled, asyncio.CancelledError)
    assert not issubclass(OperationCancelled, trio.Cancelled)


# -- register and unregister -------------------------------------------------------------------


def test_register_runs_callback_exactly_once_on_cancel_in_the_cancelling_thread() -> None:
    source = CancellationTokenSource()
    ran_in: list[threading.Thread] = []
    source.token.register(lambda: ran_in.append(threading.current_thread()))
    assert ran_in == []
    source.cancel()
    assert ran_in == [threading.current_thread()]  # before cancel() returned
    source.cancel()
    source.close()
    assert len(ran_in) == 1


def test_register_runs_callbacks_in_registration_order() -> None:
    source = CancellationTokenSource()
    order: list[int] = []
    for i in range(10):
        source.token.register(lambda i=i: order.append(i))  # type: ignore[misc]
    source.cancel()
    assert order == list(range(10))


def test_register_on_cancelled_token_runs_callback_at_once() -> None:
    source = CancellationTokenSource()
    source.cancel()
    ran_in: list[threading.Thread] = []
    registration = source.token.register(lambda: ran_in.append(threading.current_thread()))
    assert ran_in == [threading.current_thread()]  # before register() returned
    assert registration.unregister() is False
    source.cancel()
    assert len(ran_in) == 1


def test_register_on_closed_token_never_runs_callback() -> None:
    source = CancellationTokenSource()
    source.close()
    calls: list[str] = []
    registration = source.token.register(lambda: calls.append("ran"))
    source.cancel()
    assert calls == []
    assert registration.unregister() is False


def test_unregister_before_cancel_returns_true_and_prevents_the_run() -> None:
    source = CancellationTokenSource()
    calls: list[str] = []
    removed = source.token.register(lambda: calls.append("removed"))
    source.token.register(lambda: calls.append("kept"))
    assert removed.unregister() is True
    assert removed.unregister() is False  # idempotent
    assert len(_callbacks(source.token)) == 1
    source.cancel()
    assert calls == ["kept"]
    assert removed.unregister() is False


def test_unregister_after_the_callback_ran_returns_false() -> None:
    source = CancellationTokenSource()
    calls: list[str] = []
    registration = source.token.register(lambda: calls.append("ran"))
    source.cancel()
    assert calls == ["ran"]
    assert registration.unregister() is False
    assert registration.unregister() is False
    assert calls == ["ran"]


def test_registration_as_context_manager_unregisters_on_exit() -> None:
    source = CancellationTokenSource()
    calls: list[str] = []
    with source.token.register(lambda: calls.append("left")) as registration:
        assert isinstance(registration, CancellationTokenRegistration)
        assert len(_callbacks(source.token)) == 1
    assert len(_callbacks(source.token)) == 0
    with source.token.register(lambda: calls.append("inside")):
        source.cancel()
    assert calls == ["inside"]


def test_callback_that_raises_is_logged_and_the_other_callbacks_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="fastapi_abort")
    source = CancellationTokenSource()
    calls: list[str] = []
    error = RuntimeError("boom")

    def bad() -> None:
        calls.append("bad")
        raise error

    source.token.register(lambda: calls.append("before"))
    source.token.register(bad)
    source.token.register(lambda: calls.append("after"))
    source.cancel()  # does not raise
    assert calls == ["before", "bad", "after"]
    records = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == CALLBACK_FAILED % (bad,)
    assert record.exc_info is not None
    assert record.exc_info[1] is error


def test_register_on_cancelled_token_logs_a_raising_callback_instead_of_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="fastapi_abort")
    source = CancellationTokenSource()
    source.cancel()

    def bad() -> None:
        raise ValueError("nope")

    source.token.register(bad)
    records = [r for r in caplog.records if r.name == "fastapi_abort"]
    assert [r.getMessage() for r in records] == [CALLBACK_FAILED % (bad,)]
    assert records[0].levelno == logging.ERROR


def test_reentrant_callbacks_do_not_deadlock() -> None:
    source = CancellationTokenSource()
    token = source.token
    first = _Reason("first")
    seen: list[object] = []
    inner_calls: list[str] = []
    children: list[CancellationTokenSource] = []
    registrations: list[CancellationTokenRegistration] = []

    def reentrant() -> None:
        source.cancel(_Reason("again"))  # cancel() again from inside a callback
        token.register(lambda: inner_calls.append("inner"))  # runs at once
        seen.append(token.is_cancellation_requested)
        seen.append(token.reason)
        children.append(CancellationTokenSource(token))  # links to the token being cancelled
        seen.append(registrations[0].unregister())  # unregisters itself while running

    registrations.append(token.register(reentrant))
    later: list[str] = []
    token.register(lambda: later.append("later"))
    thread = threading.Thread(target=source.cancel, args=(first,), daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "cancel() deadlocked in a re-entrant callback"
    assert inner_calls == ["inner"]
    assert seen == [True, first, False]
    assert later == ["later"]
    assert token.reason is first
    (child,) = children
    assert child.token.reason is first


# -- linked sources ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1])
def test_linked_source_is_cancelled_when_either_parent_is_and_keeps_its_reason(which: int) -> None:
    parents = [CancellationTokenSource(), CancellationTokenSource()]
    child = CancellationTokenSource(parents[0].token, parents[1].token)
    calls: list[str] = []
    child.token.register(lambda: calls.append("child"))
    reason = _Reason(f"parent {which}")
    parents[which].cancel(reason)
    assert child.token.is_cancellation_requested is True
    assert child.token.reason is reason
    assert calls == ["child"]
    assert parents[1 - which].token.is_cancellation_requested is False


def test_linked_grandchild_is_cancelled_through_the_chain() -> None:
    root = CancellationTokenSource()
    child = CancellationTokenSource(root.token)
    grandchild = CancellationTokenSource(child.token)
    calls: list[str] = []
    grandchild.token.register(lambda: calls.append("grandchild"))
    reason = _Reason("root")
    root.cancel(reason)
    assert child.token.reason is reason
    assert grandchild.token.reason is reason
    assert calls == ["grandchild"]


def test_cancelling_a_linked_child_does_not_cancel_its_parent() -> None:
    root = CancellationTokenSource()
    child = CancellationTokenSource(root.token)
    grandchild = CancellationTokenSource(child.token)
    child.cancel()
    assert grandchild.token.reason is EXPLICIT
    assert root.token.is_cancellation_requested is False


def test_linking_to_an_already_cancelled_parent_is_cancelled_at_construction() -> None:
    parent = CancellationTokenSource()
    reason = _Reason("early")
    parent.cancel(reason)
    child = CancellationTokenSource(parent.token)
    assert child.token.is_cancellation_requested is True
    assert child.token.reason is reason
    # A closed parent that was cancelled before it closed still counts.
    parent.close()
    late = CancellationTokenSource(CancellationTokenSource().token, parent.token)
    assert late.token.reason is reason


def test_closing_a_linked_child_unregisters_it_from_the_parent() -> None:
    parent = CancellationTokenSource()
    assert len(_callbacks(parent.token)) == 0
    closed = CancellationTokenSource(parent.token)
    kept = CancellationTokenSource(parent.token)
    assert len(_callbacks(parent.token)) == 2
    closed.close()
    assert len(_callbacks(parent.token)) == 1
    closed.close()
    assert len(_callbacks(parent.token)) == 1
    kept.close()
    assert len(_callbacks(parent.token)) == 0
    parent.cancel()
    assert closed.token.is_cancellation_requested is False
    assert closed.token.can_be_cancelled is False
    assert kept.token.is_cancellation_requested is False


def test_closing_a_linked_child_leaves_siblings_linked() -> None:
    parent = CancellationTokenSource()
    closed = CancellationTokenSource(parent.token)
    kept = CancellationTokenSource(parent.token)
    closed.close()
    parent.cancel()
    assert kept.token.reason is EXPLICIT
    assert closed.token.is_cancellation_requested is False


@pytest.mark.parametrize(
    ("bad", "type_name"),
    [(CancellationTokenSource(), "CancellationTokenSource"), ("token", "str"), (None, "NoneType")],
)
def test_linked_source_rejects_a_parent_that_is_not_a_token(bad: object, type_name: str) -> None:
    good = CancellationTokenSource()
    message = NOT_CANCELLABLE_SOURCE.format(type=type_name)
    with pytest.raises(TypeError, match=re.escape(message)):
        CancellationTokenSource(good.token, bad)  # type: ignore[arg-type]
    assert len(_callbacks(good.token)) == 0  # nothing half-linked


@pytest.mark.anyio
@asyncio_only
async def test_linked_child_sees_a_passed_parent_deadline_on_a_plain_read(
    anyio_backend: str,
) -> None:
    # The parent's timer is on this asyncio loop, which does not run while this test does not
    # await: only the read of the grandchild can see that the deadline passed.
    root = CancellationTokenSource()
    child = CancellationTokenSource(root.token)
    grandchild = CancellationTokenSource(child.token)
    calls: list[str] = []
    grandchild.token.register(lambda: calls.append("grandchild"))
    root.cancel_after(0)
    assert calls == []
    assert grandchild.token.is_cancellation_requested is True
    assert grandchild.token.reason is DEADLINE
    assert calls == ["grandchild"]
    assert root.token.reason is DEADLINE
    assert child.token.reason is DEADLINE
    root.close()


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
    timers = _new_timer_threads(before)
    assert len(timers) == 1
    source.close()
    # A 30 s timer thread ends this early only if it was cancelled.
    timers[0].join(WAIT)
    assert not timers[0].is_alive()
    assert _new_timer_threads(before) == []
    assert source.token.is_cancellation_requested is False
    assert source.token.wait_blocking(0) is False


def test_replacing_the_deadline_stops_the_earlier_timer_thread() -> None:
    before = set(threading.enumerate())
    with CancellationTokenSource() as source:
        source.cancel_after(30)
        (first,) = _new_timer_threads(before)
        source.cancel_after(20)
        first.join(WAIT)
        assert not first.is_alive()
        assert len(_new_timer_threads(before)) == 1
    for thread in _new_timer_threads(before):
        thread.join(WAIT)
    assert _new_timer_threads(before) == []


def test_cancel_after_on_a_cancelled_or_closed_token_starts_no_timer() -> None:
    before = set(threading.enumerate())
    cancelled = CancellationTokenSource()
    cancelled.cancel()
    cancelled.cancel_after(30)
    closed = CancellationTokenSource()
    closed.close()
    closed.cancel_after(30)
    assert _new_timer_threads(before) == []
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


# -- async waiting -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wait_returns_when_cancelled_from_another_task() -> None:
    source = CancellationTokenSource()
    done: list[str] = []

    async def waiter() -> None:
        await source.token.wait()
        done.append("woke")

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert done == []
            assert len(_callbacks(source.token)) == 1
            source.cancel()
    assert done == ["woke"]


@pytest.mark.anyio
async def test_wait_returns_at_once_when_already_cancelled() -> None:
    source = CancellationTokenSource()
    source.cancel()
    with anyio.fail_after(WAIT):
        await source.token.wait()


@pytest.mark.anyio
async def test_wait_cancelled_from_outside_leaves_no_callback_behind() -> None:
    source = CancellationTokenSource()
    with anyio.move_on_after(0.01) as scope:
        await source.token.wait()
    assert scope.cancelled_caught
    assert len(_callbacks(source.token)) == 0


@pytest.mark.anyio
async def test_sleep_raises_operation_cancelled_as_soon_as_the_token_trips() -> None:
    source = CancellationTokenSource()
    reason = _Reason("stop sleeping")
    caught: list[OperationCancelled] = []

    async def sleeper() -> None:
        with pytest.raises(OperationCancelled) as info:
            await source.token.sleep(30)
        caught.append(info.value)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await wait_all_tasks_blocked()
            assert caught == []
            source.cancel(reason)
    (exc,) = caught
    assert exc.token is source.token
    assert exc.reason is reason
    assert len(_callbacks_or_empty(source.token)) == 0


@pytest.mark.anyio
async def test_sleep_raises_at_once_when_already_cancelled() -> None:
    source = CancellationTokenSource()
    source.cancel()
    with anyio.fail_after(WAIT), pytest.raises(OperationCancelled) as info:
        await source.token.sleep(30)
    assert info.value.reason is EXPLICIT


@pytest.mark.anyio
async def test_sleep_completes_normally_when_not_cancelled() -> None:
    source = CancellationTokenSource()
    start = anyio.current_time()
    with anyio.fail_after(WAIT):
        await source.token.sleep(0.02)
    assert anyio.current_time() - start >= 0.01
    assert source.token.is_cancellation_requested is False
    assert len(_callbacks(source.token)) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("seconds", [-1, -0.001, math.nan, True, "1"], ids=repr)
async def test_sleep_rejects_a_negative_nan_or_non_number_duration(seconds: float) -> None:
    source = CancellationTokenSource()
    message = re.escape(BAD_SECONDS.format(what="sleep", seconds=seconds))
    with anyio.fail_after(WAIT), pytest.raises(ValueError, match=message):
        await source.token.sleep(seconds)


# -- scope() -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_scope_cancels_the_await_in_progress_and_raises_operation_cancelled() -> None:
    source = CancellationTokenSource()
    reason = _Reason("abandon")
    caught: list[OperationCancelled] = []
    steps: list[str] = []

    async def body() -> None:
        with source.token.scope():
            steps.append("awaiting")
            await anyio.sleep_forever()
            steps.append("after the await")

    async def worker() -> None:
        with pytest.raises(OperationCancelled) as info:
            await body()
        caught.append(info.value)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await wait_all_tasks_blocked()
            assert steps == ["awaiting"]
            source.cancel(reason)
    assert steps == ["awaiting"]
    (exc,) = caught
    assert exc.token is source.token
    assert exc.reason is reason
    assert len(_callbacks_or_empty(source.token)) == 0


@pytest.mark.anyio
async def test_scope_on_a_cancelled_token_cancels_the_block_at_its_first_await() -> None:
    source = CancellationTokenSource()
    source.cancel()
    steps: list[str] = []

    async def body() -> None:
        with source.token.scope():
            steps.append("before the first await")
            await anyio.sleep(0)
            steps.append("after the first await")

    with anyio.fail_after(WAIT), pytest.raises(OperationCancelled) as info:
        await body()
    assert steps == ["before the first await"]
    assert info.value.reason is EXPLICIT


@pytest.mark.anyio
@pytest.mark.parametrize("when", ["before", "inside"])
async def test_scope_block_without_awaits_completes(when: str) -> None:
    source = CancellationTokenSource()
    if when == "before":
        source.cancel()
    steps: list[str] = []
    with source.token.scope():
        steps.append("start")
        if when == "inside":
            source.cancel()
        steps.append("end")
    assert steps == ["start", "end"]
    assert source.token.is_cancellation_requested is True
    # No cancellation is left over for later awaits of this task.
    with anyio.fail_after(WAIT):
        for _ in range(3):
            await anyio.sleep(0)


@pytest.mark.anyio
async def test_scope_that_completes_normally_leaves_no_callback_behind() -> None:
    source = CancellationTokenSource()
    with source.token.scope() as cancel_scope:
        assert isinstance(cancel_scope, anyio.CancelScope)
        assert len(_callbacks(source.token)) == 1
        await anyio.sleep(0)
    assert len(_callbacks(source.token)) == 0
    assert not cancel_scope.cancelled_caught


@pytest.mark.anyio
@pytest.mark.parametrize("token_cancel", ["not at all", "just before", "just after"])
async def test_scope_lets_an_outer_cancellation_through(token_cancel: str) -> None:
    source = CancellationTokenSource()
    steps: list[str] = []
    escaped: list[BaseException] = []
    outer = anyio.CancelScope()

    async def worker() -> None:
        try:
            with outer:
                with source.token.scope():
                    steps.append("awaiting")
                    await anyio.sleep_forever()
                steps.append("after the token scope")
        except BaseException as exc:  # pragma: no cover - only when it fails
            escaped.append(exc)
            raise

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await wait_all_tasks_blocked()
            if token_cancel == "just before":
                source.cancel()
            outer.cancel()
            if token_cancel == "just after":
                source.cancel()
    assert escaped == []
    assert outer.cancelled_caught
    assert steps == ["awaiting"]
    assert source.token.is_cancellation_requested is (token_cancel != "not at all")


@pytest.mark.anyio
@pytest.mark.parametrize("token_cancel", ["before", "after"])
async def test_scope_lets_an_outer_cancellation_through_when_cancelled_inside_the_block(
    token_cancel: str,
) -> None:
    source = CancellationTokenSource()
    reached: list[str] = []
    with anyio.fail_after(WAIT):
        with anyio.CancelScope() as outer:
            with source.token.scope():
                if token_cancel == "before":
                    source.cancel()
                outer.cancel()
                if token_cancel == "after":
                    source.cancel()
                await anyio.sleep_forever()
            reached.append("after the token scope")
    assert outer.cancelled_caught
    assert reached == []


@pytest.mark.anyio
async def test_scope_lets_a_timeout_inside_it_through_as_timeout_error() -> None:
    source = CancellationTokenSource()
    with (
        anyio.fail_after(WAIT),
        pytest.raises(TimeoutError),
        source.token.scope(),
        anyio.fail_after(0.01),
    ):
        await anyio.sleep_forever()
    assert source.token.is_cancellation_requested is False
    assert len(_callbacks(source.token)) == 0


@pytest.mark.anyio
async def test_scope_inside_a_timeout_lets_the_timeout_through_as_timeout_error() -> None:
    source = CancellationTokenSource()
    with pytest.raises(TimeoutError), anyio.fail_after(0.01), source.token.scope():
        await anyio.sleep_forever()
    assert len(_callbacks(source.token)) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["NONE", "closed source"])
async def test_scope_on_a_token_that_can_never_be_cancelled_works(kind: str) -> None:
    if kind == "NONE":
        token = CancellationToken.NONE
    else:
        source = CancellationTokenSource()
        source.close()
        token = source.token
    steps: list[str] = []
    with anyio.fail_after(WAIT):
        with token.scope() as cancel_scope:
            assert isinstance(cancel_scope, anyio.CancelScope)
            await anyio.sleep(0)
            steps.append("ran")
        # The yielded scope still works as a plain cancel scope.
        with token.scope() as cancel_scope:
            cancel_scope.cancel()
            await anyio.sleep_forever()
    assert steps == ["ran"]
    assert cancel_scope.cancelled_caught


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["deadline", "cancel()"])
async def test_scope_yielded_cancel_scope_does_not_raise_operation_cancelled_for_its_own_cancel(
    how: str,
) -> None:
    # scope() yields its CancelScope "for its deadline or shield". Expiring that deadline (or
    # cancelling the scope) while the token is NOT cancelled must not raise OperationCancelled,
    # whose contract is "raised when an operation stops because its token was cancelled".
    source = CancellationTokenSource()
    with anyio.fail_after(WAIT):
        try:
            with source.token.scope() as cancel_scope:
                if how == "deadline":
                    cancel_scope.deadline = anyio.current_time() + 0.01
                else:
                    cancel_scope.cancel()
                await anyio.sleep_forever()
        except OperationCancelled as exc:
            pytest.fail(
                f"OperationCancelled raised though the token was not cancelled "
                f"(reason={exc.reason!r}, message={str(exc)!r})"
            )
    assert source.token.is_cancellation_requested is False
    assert cancel_scope.cancelled_caught


@pytest.mark.anyio
async def test_scope_in_a_worker_thread_raises_runtime_error_with_no_event_loop_message() -> None:
    source = CancellationTokenSource()

    def enter_scope() -> None:
        with source.token.scope():
            pass  # pragma: no cover - never entered

    with pytest.raises(RuntimeError) as info:
        await anyio.to_thread.run_sync(enter_scope)
    assert str(info.value) == NO_EVENT_LOOP.format(what="CancellationToken.scope()")
    assert len(_callbacks(source.token)) == 0


# -- threads -----------------------------------------------------------------------------------

Waiter = Callable[[CancellationToken], Awaitable[None]]


async def _wait(token: CancellationToken) -> None:
    await token.wait()


async def _sleep(token: CancellationToken) -> None:
    with pytest.raises(OperationCancelled):
        await token.sleep(30)


async def _sleep_forever(token: CancellationToken) -> None:
    with pytest.raises(OperationCancelled):
        await token.sleep(math.inf)


async def _scope(token: CancellationToken) -> None:
    with pytest.raises(OperationCancelled), token.scope():
        await anyio.sleep_forever()


WAITERS: dict[str, Waiter] = {
    "wait()": _wait,
    "sleep(30)": _sleep,
    "sleep(inf)": _sleep_forever,
    "scope()": _scope,
}


async def _run_waiter_then_cancel(
    source: CancellationTokenSource, waiter: Waiter, cancel: Callable[[], Awaitable[None]]
) -> None:
    done: list[str] = []

    async def run() -> None:
        await waiter(source.token)
        done.append("woke")

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await wait_all_tasks_blocked()
            assert done == []
            assert len(_callbacks(source.token)) == 1  # the waiter is registered
            await cancel()
    assert done == ["woke"]
    assert source.token.reason is EXPLICIT


@pytest.mark.anyio
@pytest.mark.parametrize("waiter", WAITERS.values(), ids=WAITERS.keys())
async def test_cancel_from_a_worker_thread_wakes_a_task_awaiting_the_token(waiter: Waiter) -> None:
    source = CancellationTokenSource()

    async def cancel() -> None:
        await anyio.to_thread.run_sync(source.cancel)

    await _run_waiter_then_cancel(source, waiter, cancel)


@pytest.mark.anyio
@pytest.mark.parametrize("waiter", WAITERS.values(), ids=WAITERS.keys())
async def test_cancel_from_a_plain_thread_wakes_a_task_awaiting_the_token(waiter: Waiter) -> None:
    source = CancellationTokenSource()
    thread = threading.Thread(target=source.cancel, daemon=True)

    async def cancel() -> None:
        thread.start()

    await _run_waiter_then_cancel(source, waiter, cancel)
    thread.join(WAIT)
    assert not thread.is_alive()


@pytest.mark.anyio
async def test_cancel_from_the_loop_wakes_a_thread_blocked_in_wait_blocking() -> None:
    source = CancellationTokenSource()
    probe = _probe_blocking_waits(source.token)
    results: list[bool] = []

    async def block() -> None:
        results.append(await anyio.to_thread.run_sync(source.token.wait_blocking, WAIT * 2))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(block)
            assert await anyio.to_thread.run_sync(probe.entered.wait, WAIT)
            source.cancel()
    assert results == [True]


@pytest.mark.anyio
async def test_cancel_from_the_loop_wakes_a_thread_blocked_in_sleep_blocking() -> None:
    source = CancellationTokenSource()
    probe = _probe_blocking_waits(source.token)
    caught: list[OperationCancelled] = []

    def block() -> None:
        with pytest.raises(OperationCancelled) as info:
            source.token.sleep_blocking(30)
        caught.append(info.value)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, block)
            assert await anyio.to_thread.run_sync(probe.entered.wait, WAIT)
            source.cancel()
    (exc,) = caught
    assert exc.token is source.token
    assert exc.reason is EXPLICIT


def test_wait_blocking_returns_false_after_its_timeout_when_not_cancelled() -> None:
    source = CancellationTokenSource()
    assert source.token.wait_blocking(0.01) is False
    assert source.token.wait_blocking(0) is False


def test_wait_blocking_and_sleep_blocking_return_at_once_when_cancelled() -> None:
    source = CancellationTokenSource()
    source.cancel()
    assert source.token.wait_blocking() is True
    assert source.token.wait_blocking(30) is True
    with pytest.raises(OperationCancelled):
        source.token.sleep_blocking(30)


def test_sleep_blocking_completes_when_not_cancelled() -> None:
    source = CancellationTokenSource()
    start = time.monotonic()
    source.token.sleep_blocking(0.02)
    assert time.monotonic() - start >= 0.01
    assert source.token.is_cancellation_requested is False


def test_blocking_waits_reject_negative_durations() -> None:
    token = CancellationTokenSource().token
    with pytest.raises(
        ValueError, match=re.escape(BAD_SECONDS.format(what="wait_blocking", seconds=-1))
    ):
        token.wait_blocking(-1)
    with pytest.raises(
        ValueError, match=re.escape(BAD_SECONDS.format(what="sleep_blocking", seconds=-0.5))
    ):
        token.sleep_blocking(-0.5)
    with pytest.raises(
        ValueError, match=re.escape(BAD_SECONDS.format(what="sleep_blocking", seconds=math.nan))
    ):
        token.sleep_blocking(math.nan)


def test_cancel_from_one_thread_wakes_a_thread_blocked_in_wait_blocking() -> None:
    source = CancellationTokenSource()
    probe = _probe_blocking_waits(source.token)
    results: list[bool] = []
    waiter = threading.Thread(
        target=lambda: results.append(source.token.wait_blocking()), daemon=True
    )
    waiter.start()
    assert probe.entered.wait(WAIT)
    canceller = threading.Thread(target=source.cancel, daemon=True)
    canceller.start()
    for thread in (canceller, waiter):
        thread.join(WAIT)
        assert not thread.is_alive()
    assert results == [True]


def test_register_unregister_and_cancel_from_many_threads_runs_each_callback_exactly_once() -> None:
    source = CancellationTokenSource()
    token = source.token
    workers = 8
    counts: dict[tuple[int, int], int] = {}
    counts_lock = threading.Lock()
    midway = threading.Barrier(workers + 1)
    unregistered: list[dict[tuple[int, int], bool]] = [{} for _ in range(workers)]
    kept: list[list[tuple[int, int]]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def make_callback(key: tuple[int, int]) -> Callable[[], None]:
        def callback() -> None:
            with counts_lock:
                counts[key] = counts.get(key, 0) + 1

        return callback

    def work(w: int) -> None:
        n = 0

        def op() -> None:
            nonlocal n
            key = (w, n)
            n += 1
            registration = token.register(make_callback(key))
            if n % 2:
                unregistered[w][key] = registration.unregister()
            else:
                kept[w].append(key)

        try:
            for _ in range(100):
                op()
            midway.wait(WAIT)
            # Race the canceller, then go on for a while after the cancellation.
            give_up = time.monotonic() + WAIT
            while not token.is_cancellation_requested and time.monotonic() < give_up:
                op()
            for _ in range(50):
                op()
        except BaseException as exc:  # pragma: no cover - only when it fails
            errors.append(exc)

    def cancel() -> None:
        try:
            midway.wait(WAIT)
            source.cancel()
        except BaseException as exc:  # pragma: no cover - only when it fails
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
    threads.append(threading.Thread(target=cancel, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    assert errors == []
    assert token.is_cancellation_requested
    removed = {key: result for part in unregistered for key, result in part.items()}
    for key, result in removed.items():
        assert counts.get(key, 0) == (0 if result else 1), (key, result)
    for part in kept:
        for key in part:
            assert counts.get(key, 0) == 1, key
    # Both outcomes of unregister() happened, so the test raced something.
    assert any(removed.values())
    assert not all(removed.values())


# -- races and edge cases ---------------------------------------------------------------------
# Each test forces one interleaving of threads that an earlier version got wrong.


def test_wait_blocking_without_timeout_is_not_cut_short_when_the_deadline_is_extended() -> None:
    # A thread blocks in wait_blocking() with a 0.1 s deadline; the deadline is then moved later
    # (cancel_after() "replaces the earlier deadline"). The thread must not return at the old
    # deadline with False (a wait without timeout that returns while the token is not cancelled),
    # but keep waiting and return True at the new one.
    with CancellationTokenSource(timeout=0.1) as source:
        probe = _probe_blocking_waits(source.token)
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
    probe = _probe_blocking_waits(source.token)
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
