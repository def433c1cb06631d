"""CancellationToken.run() and cancel_on(): cancel once, never a cancel left on its way.

``run()`` on asyncio and trio (the anyio plugin's ``anyio_backend``); ``cancel_on()`` is for
``def`` code, tested from plain threads.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading

import anyio
import pytest

from fastapi_abort import CancellationTokenSource, OperationCancelled
from fastapi_abort._interrupt import BAD_REPEAT, CANCEL_FAILED
from tests.support import WAIT, asyncio_only


class DriverError(Exception):
    """What a driver raises when its statement was cancelled (psycopg's QueryCanceled)."""


async def answer(value: int) -> int:
    await anyio.sleep(0)
    return value


@pytest.mark.anyio
async def test_run_returns_the_result() -> None:
    with CancellationTokenSource() as source:
        assert await source.token.run(answer(7)) == 7


@pytest.mark.anyio
async def test_run_on_a_cancelled_token_never_starts_the_coroutine() -> None:
    started = False

    async def query() -> None:
        nonlocal started
        started = True

    with CancellationTokenSource() as source:
        source.cancel()
        coroutine = query()
        with pytest.raises(OperationCancelled):
            await source.token.run(coroutine)
    assert not started
    assert (
        inspect.getcoroutinestate(coroutine) == "CORO_CLOSED"
    )  # closed: no "never awaited" warning (warnings are errors)


@asyncio_only
@pytest.mark.anyio
async def test_run_on_a_cancelled_token_takes_a_future_too() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    with CancellationTokenSource() as source:
        source.cancel()
        with pytest.raises(OperationCancelled):
            await source.token.run(future)
    assert not future.done()


async def driver_query(cleanup_awaits: int, cleaned: list[int]) -> None:
    """A driver's statement: on cancellation it sends a cancel request and waits for the
    server (``cleanup_awaits`` awaits), then re-raises."""
    try:
        await anyio.sleep_forever()
    except BaseException:
        for step in range(cleanup_awaits):
            await asyncio.sleep(0)
            cleaned.append(step)
        raise


@asyncio_only
@pytest.mark.anyio
async def test_run_cancels_once_so_the_drivers_cleanup_completes() -> None:
    cleaned: list[int] = []
    with CancellationTokenSource() as source:
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_when_blocked, source)
            with pytest.raises(OperationCancelled):
                await source.token.run(driver_query(5, cleaned))
    assert cleaned == [0, 1, 2, 3, 4]


@asyncio_only
@pytest.mark.anyio
async def test_scope_cancels_the_drivers_cleanup_again() -> None:
    """Why run() exists: inside scope() the cleanup's first await is cancelled again."""
    cleaned: list[int] = []
    with CancellationTokenSource() as source:
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_when_blocked, source)
            with pytest.raises(OperationCancelled), source.token.scope():
                await driver_query(5, cleaned)
    assert cleaned == []


async def _cancel_when_blocked(source: CancellationTokenSource) -> None:
    await anyio.wait_all_tasks_blocked()
    source.cancel()


@asyncio_only
@pytest.mark.anyio
async def test_run_chains_the_error_a_driver_turns_the_cancel_into() -> None:
    async def query() -> None:
        try:
            await anyio.sleep_forever()
        except asyncio.CancelledError:
            raise DriverError("canceling statement due to user request") from None

    with CancellationTokenSource() as source:
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_when_blocked, source)
            with pytest.raises(OperationCancelled) as caught:
                await source.token.run(query())
    assert isinstance(caught.value.__cause__, DriverError)


@asyncio_only
@pytest.mark.anyio
async def test_run_returns_what_a_call_finished_despite_the_cancel() -> None:
    async def query() -> str:
        try:
            await anyio.sleep_forever()
        except asyncio.CancelledError:
            return "finished anyway"
        raise AssertionError("unreachable")  # pragma: no cover

    with CancellationTokenSource() as source:
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_when_blocked, source)
            assert await source.token.run(query()) == "finished anyway"


@asyncio_only
@pytest.mark.anyio
async def test_run_passes_an_outer_cancellation_on_once_and_waits_for_the_cleanup() -> None:
    cleaned: list[int] = []
    with CancellationTokenSource() as source:
        with anyio.CancelScope() as outer:
            async with anyio.create_task_group() as group:

                async def cancel_outer() -> None:
                    await anyio.wait_all_tasks_blocked()
                    outer.cancel()

                group.start_soon(cancel_outer)
                await source.token.run(driver_query(3, cleaned))
        assert outer.cancelled_caught
        assert not source.is_cancellation_requested
    assert cleaned == [0, 1, 2]


@asyncio_only
@pytest.mark.anyio
async def test_run_an_outer_cancellation_wins_over_the_drivers_error() -> None:
    """The driver turns the cancel into an error of its own: the caller's cancellation still
    propagates, and the error is not left for asyncio to log as never retrieved."""
    finished: list[asyncio.Task[None]] = []

    async def query() -> None:
        current = asyncio.current_task()
        assert current is not None
        finished.append(current)
        try:
            await anyio.sleep_forever()
        except asyncio.CancelledError:
            raise DriverError("canceling statement due to user request") from None

    with CancellationTokenSource() as source, anyio.CancelScope() as outer:
        async with anyio.create_task_group() as group:

            async def cancel_outer() -> None:
                await anyio.wait_all_tasks_blocked()
                outer.cancel()

            group.start_soon(cancel_outer)
            await source.token.run(query())
    assert outer.cancelled_caught
    (task,) = finished
    assert isinstance(task.exception(), DriverError)


@asyncio_only
@pytest.mark.anyio
async def test_run_cancelled_from_another_thread() -> None:
    cleaned: list[int] = []
    with CancellationTokenSource() as source:
        async with anyio.create_task_group() as group:

            async def cancel_from_thread() -> None:
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(source.cancel)

            group.start_soon(cancel_from_thread)
            with pytest.raises(OperationCancelled):
                await source.token.run(driver_query(2, cleaned))
    assert cleaned == [0, 1]


@asyncio_only
@pytest.mark.anyio
async def test_run_a_cancel_that_comes_after_the_call_ended_is_a_no_op() -> None:
    """The cancel reaches the loop (from another thread) once the task is done: the result
    stands, and nothing is cancelled."""
    with CancellationTokenSource() as source:

        async def query() -> int:
            thread = threading.Thread(target=source.cancel)
            thread.start()
            thread.join(WAIT)
            return 3

        assert await source.token.run(query()) == 3
        assert source.is_cancellation_requested


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_run_on_trio_is_a_scope() -> None:
    with CancellationTokenSource() as source:
        assert await source.token.run(answer(1)) == 1
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_when_blocked, source)
            with pytest.raises(OperationCancelled):
                await source.token.run(anyio.sleep_forever())


# -- cancel_on ----------------------------------------------------------------------------------


def test_cancel_on_never_calls_cancel_if_the_token_stays_quiet() -> None:
    calls: list[str] = []
    with CancellationTokenSource() as source:
        with source.token.cancel_on(lambda: calls.append("cancel")):
            pass
        source.cancel()
    assert calls == []


def test_cancel_on_a_cancelled_token_never_runs_the_block() -> None:
    with CancellationTokenSource() as source:
        source.cancel()
        with pytest.raises(OperationCancelled), source.token.cancel_on(lambda: None):
            raise AssertionError("the block ran")  # pragma: no cover


def test_cancel_on_calls_cancel_in_a_thread_of_its_own_and_translates() -> None:
    """The token is cancelled in this thread, as the event loop would: cancel() runs in
    another one, and the driver's error becomes OperationCancelled."""
    statement_stopped = threading.Event()
    cancelling_threads: list[threading.Thread] = []
    outcome: list[BaseException] = []

    def cancel() -> None:
        cancelling_threads.append(threading.current_thread())
        statement_stopped.set()

    with CancellationTokenSource() as source:
        entered = threading.Event()

        def endpoint() -> None:
            try:
                with source.token.cancel_on(cancel, translate=(DriverError,)):
                    entered.set()
                    assert statement_stopped.wait(WAIT)
                    raise DriverError("canceling statement due to user request")
            except OperationCancelled as exc:
                outcome.append(exc)

        worker = threading.Thread(target=endpoint)
        worker.start()
        assert entered.wait(WAIT)
        source.cancel()
        worker.join(WAIT)
    assert len(outcome) == 1
    assert isinstance(outcome[0].__cause__, DriverError)
    assert cancelling_threads
    assert cancelling_threads[0] not in (threading.current_thread(), worker)


def test_cancel_on_passes_a_translated_error_on_as_it_is_when_the_token_is_quiet() -> None:
    """A statement_timeout is reported as what it is."""
    with (
        CancellationTokenSource() as source,
        pytest.raises(DriverError),
        source.token.cancel_on(lambda: None, translate=(DriverError,)),
    ):
        raise DriverError("canceling statement due to statement timeout")


def test_cancel_on_repeats_until_the_block_ends() -> None:
    """A cancel sent before the statement reached the server is lost: the next one stops it."""
    calls: list[int] = []
    third = threading.Event()

    def cancel() -> None:
        calls.append(len(calls))
        if len(calls) == 3:
            third.set()

    with CancellationTokenSource() as source, source.token.cancel_on(cancel, repeat=0.001):
        source.cancel()
        assert third.wait(WAIT)
    count = len(calls)
    assert count >= 3
    assert source.token.is_cancellation_requested
    # Nothing is called once the block has ended (its thread was joined).
    assert len(calls) == count


def test_cancel_on_waits_for_a_cancel_in_progress_on_exit() -> None:
    """A PostgreSQL cancel targets the connection: one still on its way when the block ends
    could stop the next statement on it. Leaving the block waits for it."""
    in_progress = threading.Event()
    block_left = threading.Event()
    events: list[str] = []

    def cancel() -> None:
        in_progress.set()
        # Without the wait on exit, block_left is set at once and this returns late.
        block_left.wait(0.2)
        events.append("cancel returned")

    with CancellationTokenSource() as source:
        with source.token.cancel_on(cancel):
            source.cancel()
            assert in_progress.wait(WAIT)
        events.append("block left")
        block_left.set()
    assert events == ["cancel returned", "block left"]


def test_cancel_on_a_callback_that_comes_after_the_block_starts_no_cancel() -> None:
    """The token's callbacks are running when the block ends: cancel_on's comes too late
    and starts nothing."""
    calls: list[str] = []
    first_running = threading.Event()
    block_left = threading.Event()
    with CancellationTokenSource() as source:
        # Registered first, so it runs first, and holds cancel_on's until the block has ended.
        def first() -> None:
            first_running.set()
            block_left.wait(WAIT)

        source.token.register(first)
        canceller = threading.Thread(target=source.cancel)
        with source.token.cancel_on(lambda: calls.append("cancel")):
            canceller.start()
            assert first_running.wait(WAIT)
        block_left.set()
        canceller.join(WAIT)
    assert not canceller.is_alive()
    assert calls == []


def test_cancel_on_logs_a_cancel_that_raises_and_stops_calling_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    logged = threading.Event()

    class Logged(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.set()

    def cancel() -> None:
        calls.append(1)
        raise OSError("server gone")

    handler = Logged()
    logging.getLogger("fastapi_abort").addHandler(handler)
    try:
        with CancellationTokenSource() as source, source.token.cancel_on(cancel, repeat=0.001):
            source.cancel()
            assert logged.wait(WAIT)
    finally:
        logging.getLogger("fastapi_abort").removeHandler(handler)
    assert calls == [1]
    assert [r.msg for r in caplog.records] == [CANCEL_FAILED]
    assert caplog.records[0].exc_info is not None


@pytest.mark.parametrize("repeat", [0, -1.0, float("nan")])
def test_cancel_on_needs_a_positive_repeat(repeat: float) -> None:
    with (
        CancellationTokenSource() as source,
        pytest.raises(ValueError, match="repeat") as caught,
        source.token.cancel_on(lambda: None, repeat=repeat),
    ):
        pass  # pragma: no cover
    assert str(caught.value) == BAD_REPEAT.format(repeat=repeat)


# -- what a check of a cancelled token raises ---------------------------------------------------


async def raised_in_worker_thread(
    check: str, host_cancelled: bool
) -> tuple[list[type[BaseException]], list[Exception]]:
    """What ``token.<check>()`` raised in an anyio worker thread once the token tripped, its
    host task cancelled just before (as Starlette stops a stream of a def generator) or not;
    and what escaped the task group."""
    raised: list[type[BaseException]] = []
    escaped: list[Exception] = []
    source = CancellationTokenSource()

    def work() -> None:
        source.token.wait_blocking(WAIT)
        try:
            if check == "sleep_blocking":
                source.token.sleep_blocking(WAIT)
            else:
                source.token.throw_if_cancellation_requested()
        except BaseException as exc:
            raised.append(type(exc))
            raise

    with anyio.fail_after(WAIT):
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(anyio.to_thread.run_sync, work)
                await anyio.wait_all_tasks_blocked()
                if host_cancelled:
                    tasks.cancel_scope.cancel()
                source.cancel()
        except Exception as exc:  # the thread's error, in an exception group
            escaped.append(exc)
    return raised, escaped


@pytest.mark.anyio
@pytest.mark.parametrize("check", ["sleep_blocking", "throw_if_cancellation_requested"])
async def test_a_worker_thread_whose_host_is_being_cancelled_gets_that_cancellation(
    check: str,
) -> None:
    raised, escaped = await raised_in_worker_thread(check, host_cancelled=True)
    assert raised == [anyio.get_cancelled_exc_class()]
    assert escaped == []  # the task group's own cancellation, which it absorbed


@pytest.mark.anyio
@pytest.mark.parametrize("check", ["sleep_blocking", "throw_if_cancellation_requested"])
async def test_a_worker_thread_of_a_host_that_nothing_cancels_gets_operation_cancelled(
    check: str,
) -> None:
    raised, escaped = await raised_in_worker_thread(check, host_cancelled=False)
    assert raised == [OperationCancelled]
    assert len(escaped) == 1


def test_a_plain_thread_gets_operation_cancelled() -> None:
    source = CancellationTokenSource()
    source.cancel()
    raised: list[type[BaseException]] = []

    def work() -> None:
        try:
            source.token.throw_if_cancellation_requested()
        except BaseException as exc:
            raised.append(type(exc))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(WAIT)
    assert raised == [OperationCancelled]
