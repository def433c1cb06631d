"""Callbacks registered on a token: run once, in order, in the cancelling thread; taken back."""

from __future__ import annotations

import logging
import threading

import pytest

from fastapi_abort import (
    CancellationReason,
    CancellationTokenRegistration,
    CancellationTokenSource,
)
from fastapi_abort._wake import CALLBACK_FAILED
from tests.support import (
    WAIT,
    Reason,
    callbacks_of,
)

DEADLINE = CancellationReason.DEADLINE
EXPLICIT = CancellationReason.EXPLICIT


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
    assert len(callbacks_of(source.token)) == 1
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
        assert len(callbacks_of(source.token)) == 1
    assert len(callbacks_of(source.token)) == 0
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
    first = Reason("first")
    seen: list[object] = []
    inner_calls: list[str] = []
    children: list[CancellationTokenSource] = []
    registrations: list[CancellationTokenRegistration] = []

    def reentrant() -> None:
        source.cancel(Reason("again"))  # cancel() again from inside a callback
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
