"""The token: its state, OperationCancelled, and waiting on it (``wait``, ``sleep``, ``scope``).

Async tests run on both asyncio and trio. Nothing sleeps to wait for something to happen: every
wait is on an event, bounded by :data:`tests.support.WAIT`, so the tests hold on a loaded machine.
"""

from __future__ import annotations

import asyncio
import math
import re

import anyio
import anyio.to_thread
import pytest
import trio
from anyio import wait_all_tasks_blocked

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelled,
)
from fastapi_abort._backend import NO_EVENT_LOOP
from fastapi_abort._checks import BAD_SECONDS
from tests.support import (
    WAIT,
    Reason,
    callbacks_of,
    callbacks_or_empty,
)

DEADLINE = CancellationReason.DEADLINE
EXPLICIT = CancellationReason.EXPLICIT


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
    reason = Reason("shutting down")
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
    source.cancel(Reason("custom"))
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


# -- throw_if_cancellation_requested and OperationCancelled --------------------------------------


def test_throw_if_cancellation_requested_raises_operation_cancelled_with_token_and_reason() -> None:
    source = CancellationTokenSource()
    reason = Reason("the user pressed stop")
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
            assert len(callbacks_of(source.token)) == 1
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
    assert len(callbacks_of(source.token)) == 0


@pytest.mark.anyio
async def test_sleep_raises_operation_cancelled_as_soon_as_the_token_trips() -> None:
    source = CancellationTokenSource()
    reason = Reason("stop sleeping")
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
    assert len(callbacks_or_empty(source.token)) == 0


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
    assert len(callbacks_of(source.token)) == 0


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
    reason = Reason("abandon")
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
    assert len(callbacks_or_empty(source.token)) == 0


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
        assert len(callbacks_of(source.token)) == 1
        await anyio.sleep(0)
    assert len(callbacks_of(source.token)) == 0
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
    assert len(callbacks_of(source.token)) == 0


@pytest.mark.anyio
async def test_scope_inside_a_timeout_lets_the_timeout_through_as_timeout_error() -> None:
    source = CancellationTokenSource()
    with pytest.raises(TimeoutError), anyio.fail_after(0.01), source.token.scope():
        await anyio.sleep_forever()
    assert len(callbacks_of(source.token)) == 0


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
    assert len(callbacks_of(source.token)) == 0
