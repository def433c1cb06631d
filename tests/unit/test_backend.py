"""The event-loop glue (``fastapi_abort._backend``): telling a thread without an event loop
apart, with or without trio; spawned handles; the batches of the watcher's delayed starts."""

from __future__ import annotations

import asyncio
import sys
import threading

import anyio
import pytest

from fastapi_abort._backend import NO_EVENT_LOOP, Spawned, call_soon_threadsafe
from tests.support import WAIT

pytestmark = pytest.mark.anyio


def test_without_trio_imported_a_thread_with_no_loop_is_told_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "trio", raising=False)
    with pytest.raises(RuntimeError) as caught:
        call_soon_threadsafe("CancellationToken.wait()")
    assert str(caught.value) == NO_EVENT_LOOP.format(what="CancellationToken.wait()")


def test_a_spawned_handle_cancels_once() -> None:
    calls: list[str] = []
    spawned = Spawned(lambda: calls.append("cancel"))
    spawned.cancel()
    spawned.cancel()
    assert calls == ["cancel"]


def test_a_thread_without_an_event_loop_is_told_apart_with_or_without_trio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fastapi_abort._backend as backend

    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(backend.on_event_loop()))
    thread.start()
    thread.join()
    monkeypatch.setattr(backend, "_trio", lambda: None)
    thread = threading.Thread(target=lambda: seen.append(backend.on_event_loop()))
    thread.start()
    thread.join()
    assert seen == [False, False]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the batch runs on asyncio's timers
async def test_a_watcher_batch_fires_each_item_when_its_own_delay_is_up(
    anyio_backend: str,
) -> None:
    from contextvars import Context

    from fastapi_abort._backend import call_after_delay

    fired: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    both = anyio.Event()

    class Item:
        def __init__(self, name: str) -> None:
            self.name = name
            self.added = loop.time()

        def delay_passed(self, context: Context) -> None:
            fired.append((self.name, loop.time() - self.added))
            if len(fired) == 2:
                both.set()

    delay = 0.05
    call_after_delay(Item("first"), delay)
    await anyio.sleep(delay / 2)
    # Not due when the first one's timer fires: the batch re-arms its timer for it.
    call_after_delay(Item("second"), delay)
    with anyio.fail_after(WAIT):
        await both.wait()
    assert [name for name, _ in fired] == ["first", "second"]
    assert all(waited >= delay - 0.002 for _, waited in fired)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_watcher_batches_of_two_delays_in_one_loop_stay_apart(anyio_backend: str) -> None:
    # Two middlewares with different watcher delays in one process: each delay keeps its own
    # batch, found again when the delays alternate.
    from contextvars import Context

    from fastapi_abort._backend import call_after_delay

    class Item:
        def delay_passed(self, context: Context) -> None:
            pass

    items = [Item(), Item(), Item()]
    first = call_after_delay(items[0], 0.011)
    other = call_after_delay(items[1], 0.012)
    again = call_after_delay(items[2], 0.011)
    assert first is not None
    assert other is not None
    assert again is first
    assert other is not first
    assert list(first.pending) == [items[0], items[2]]
    for batch, item in ((first, items[0]), (other, items[1]), (first, items[2])):
        batch.pending.pop(item, None)
