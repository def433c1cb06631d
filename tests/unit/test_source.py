"""The source: cancelling and closing its token, and sources linked to parent tokens."""

from __future__ import annotations

import re

import pytest

from fastapi_abort import (
    CancellationReason,
    CancellationTokenSource,
    OperationCancelled,
)
from fastapi_abort._source import NOT_CANCELLABLE_SOURCE
from tests.support import (
    Reason,
    asyncio_only,
    callbacks_of,
)

DEADLINE = CancellationReason.DEADLINE
EXPLICIT = CancellationReason.EXPLICIT


# -- cancel and close --------------------------------------------------------------------------


def test_cancel_is_idempotent_and_the_first_reason_wins() -> None:
    source = CancellationTokenSource()
    calls: list[str] = []
    source.token.register(lambda: calls.append("ran"))
    first = Reason("first")
    source.cancel(first)
    source.cancel(Reason("second"))
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
    reason = Reason("done")
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


# -- linked sources ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1])
def test_linked_source_is_cancelled_when_either_parent_is_and_keeps_its_reason(which: int) -> None:
    parents = [CancellationTokenSource(), CancellationTokenSource()]
    child = CancellationTokenSource(parents[0].token, parents[1].token)
    calls: list[str] = []
    child.token.register(lambda: calls.append("child"))
    reason = Reason(f"parent {which}")
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
    reason = Reason("root")
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
    reason = Reason("early")
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
    assert len(callbacks_of(parent.token)) == 0
    closed = CancellationTokenSource(parent.token)
    kept = CancellationTokenSource(parent.token)
    assert len(callbacks_of(parent.token)) == 2
    closed.close()
    assert len(callbacks_of(parent.token)) == 1
    closed.close()
    assert len(callbacks_of(parent.token)) == 1
    kept.close()
    assert len(callbacks_of(parent.token)) == 0
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
    assert len(callbacks_of(good.token)) == 0  # nothing half-linked


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
