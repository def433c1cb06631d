"""Waking what waits on a token from whichever thread cancels it: tasks awaiting it, threads
blocked in ``wait_blocking`` and ``sleep_blocking``, callbacks registered from many threads."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelled,
)
from fastapi_abort._checks import BAD_SECONDS
from tests.support import (
    WAIT,
    callbacks_of,
    probe_blocking_waits,
)

DEADLINE = CancellationReason.DEADLINE
EXPLICIT = CancellationReason.EXPLICIT


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
            assert len(callbacks_of(source.token)) == 1  # the waiter is registered
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
    probe = probe_blocking_waits(source.token)
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
    probe = probe_blocking_waits(source.token)
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
    probe = probe_blocking_waits(source.token)
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
