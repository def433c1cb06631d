"""The deadline budget: the header's rule for any value, what a token has left, and the option.

Against real services on loopback, chained two and three deep: tests/servers/test_budget.py.
"""

from __future__ import annotations

import math
import re
import time

import anyio
import httpx
import pytest
from fastapi import FastAPI

import fastapi_abort.httpx
from fastapi_abort import (
    BUDGET_HEADER,
    CancellationReason,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelled,
    install,
)
from fastapi_abort._budget import budget_of, budget_value
from fastapi_abort._config import BAD_BUDGET, Config
from fastapi_abort._state import RequestState
from fastapi_abort.httpx import TokenTransport
from tests.scripted import http_scope
from tests.support import WAIT, ws_scope

NAME = BUDGET_HEADER.encode()


def budget(*values: bytes, limit: float = 30.0) -> float | None:
    return budget_of([(b"host", b"testserver"), *((NAME, value) for value in values)], limit)


def test_the_header_is_whole_milliseconds() -> None:
    assert BUDGET_HEADER == "x-request-budget-ms"
    assert budget(b"1500") == 1.5
    assert budget(b"0") == 0.0
    assert budget(b"000250") == 0.25


def test_spaces_around_the_value_are_allowed() -> None:
    assert budget(b" 250 ") == 0.25
    assert budget(b"\t250") == 0.25


@pytest.mark.parametrize(
    "value",
    [b"-5", b"+5", b"1e3", b"1.5", b"abc", b"", b"  ", b"12 34", b"0x10", "٣".encode()],
)
def test_a_value_that_is_not_digits_is_ignored(value: bytes) -> None:
    assert budget(value) is None


def test_more_than_twelve_digits_is_ignored_and_twelve_are_capped() -> None:
    assert budget(b"9" * 13) is None
    assert budget(b"9" * 20) is None
    assert budget(b"9" * 12) == 30.0


def test_a_budget_is_capped_at_the_limit() -> None:
    assert budget(b"60000", limit=5.0) == 5.0
    assert budget(b"1000", limit=5.0) == 1.0


def test_of_several_headers_the_smallest_valid_one_counts() -> None:
    assert budget(b"900", b"300", b"abc", b"600") == 0.3
    assert budget(b"abc", b"-1") is None


def test_other_headers_and_none_at_all_give_no_budget() -> None:
    assert budget() is None
    assert budget_of([(b"x-request-budget", b"100"), (b"x-request-budget-ms-x", b"1")], 30) is None


def test_the_value_sent_is_rounded_down_and_never_negative() -> None:
    assert budget_value(1.9999) == "1999"
    assert budget_value(0.0004) == "0"
    assert budget_value(0.0) == "0"
    assert budget_value(-3.0) == "0"


def test_a_token_without_a_deadline_has_no_time_remaining() -> None:
    assert CancellationTokenSource().token.time_remaining() is None
    assert CancellationToken.NONE.time_remaining() is None


def test_a_token_with_a_deadline_counts_down() -> None:
    source = CancellationTokenSource(timeout=60)
    remaining = source.token.time_remaining()
    assert remaining is not None
    assert 59 < remaining <= 60


def test_a_cancelled_token_has_no_time_remaining_whatever_the_reason() -> None:
    source = CancellationTokenSource(timeout=60)
    source.cancel()
    assert source.token.time_remaining() == 0.0


def test_a_closed_token_has_no_deadline() -> None:
    source = CancellationTokenSource(timeout=60)
    source.close()
    assert source.token.time_remaining() is None


def test_a_linked_token_has_the_nearest_deadline_of_its_own_and_its_parents() -> None:
    near, far = CancellationTokenSource(timeout=10), CancellationTokenSource(timeout=100)
    linked = CancellationTokenSource(near.token, far.token, timeout=50)
    remaining = linked.token.time_remaining()
    assert remaining is not None
    assert 9 < remaining <= 10
    unlimited = CancellationTokenSource(CancellationTokenSource().token)
    assert unlimited.token.time_remaining() is None
    inherits = CancellationTokenSource(far.token)
    remaining = inherits.token.time_remaining()
    assert remaining is not None
    assert 99 < remaining <= 100


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "5"])
def test_max_budget_must_be_seconds_above_zero(bad: object) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(BAD_BUDGET.format(value=bad))}$"):
        install(FastAPI(), max_budget=bad)  # type: ignore[arg-type]


def test_max_budget_is_a_float_and_off_by_default() -> None:
    assert Config().max_budget is None
    assert Config(max_budget=5).max_budget == 5.0
    assert isinstance(Config(max_budget=5).max_budget, float)


def state(headers: list[tuple[bytes, bytes]], **options: object) -> RequestState:
    async def receive() -> dict[str, object]:
        raise AssertionError("not read")  # pragma: no cover

    config = Config.of("install()", options)
    return RequestState(http_scope(headers=headers), config, receive, websocket=False)


def test_without_max_budget_the_header_is_ignored() -> None:
    assert state([(NAME, b"100")]).deadline is None
    assert state([(NAME, b"100")], deadline=5).deadline == 5


def test_the_budget_caps_the_apps_deadline_and_the_routes() -> None:
    assert state([(NAME, b"100")], max_budget=30).deadline == 0.1
    assert state([(NAME, b"100")], max_budget=30, deadline=5).deadline == 0.1
    assert state([(NAME, b"9000")], max_budget=30, deadline=5).deadline == 5
    assert state([(NAME, b"abc")], max_budget=30, deadline=5).deadline == 5
    routed = state([(NAME, b"100")], max_budget=30)
    routed.set_deadline(None)  # Depends(deadline(None)): the caller's budget still counts
    assert routed.deadline == 0.1
    routed.set_deadline(0.05)
    assert routed.deadline == 0.05


def test_a_websocket_has_no_budget() -> None:
    async def receive() -> dict[str, object]:
        raise AssertionError("not read")  # pragma: no cover

    scope = ws_scope()
    scope["headers"] = [*scope["headers"], (NAME, b"100")]
    config = Config.of("install()", {"max_budget": 30})
    assert RequestState(scope, config, receive, websocket=True).deadline is None


# -- TokenTransport sends it -------------------------------------------------------------------


class Clock:
    """The transport's monotonic clock, which the downstream below can move on: its time on
    the budget, without the wait."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(fastapi_abort.httpx, "time", clock)
    return clock


def client_of(
    token: CancellationToken,
    *,
    status: int = 200,
    spends: float = 0.0,
    clock: Clock | None = None,
    send_budget: bool = True,
) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """A client through ``TokenTransport(token)`` to a downstream that answers ``status``,
    having spent ``spends`` seconds of the transport's ``clock``; and the requests it got."""
    seen: list[httpx.Request] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if clock is not None:
            clock.offset += spends
        return httpx.Response(status)

    transport = TokenTransport(token, httpx.MockTransport(downstream), send_budget=send_budget)
    return httpx.AsyncClient(transport=transport, base_url="http://downstream"), seen


@pytest.mark.anyio
async def test_the_transport_sends_what_the_token_has_left() -> None:
    client, seen = client_of(CancellationTokenSource(timeout=30).token)
    async with client:
        await client.get("/")
    (request,) = seen
    assert 29_000 < int(request.headers[BUDGET_HEADER]) <= 30_000


@pytest.mark.anyio
async def test_no_deadline_or_send_budget_false_sends_no_header() -> None:
    for token, send_budget in (
        (CancellationTokenSource().token, True),
        (CancellationTokenSource(timeout=30).token, False),
    ):
        client, seen = client_of(token, send_budget=send_budget)
        async with client:
            await client.get("/")
        assert BUDGET_HEADER not in seen[0].headers


@pytest.mark.anyio
async def test_a_smaller_budget_in_the_request_is_kept_and_a_larger_one_replaced() -> None:
    client, seen = client_of(CancellationTokenSource(timeout=30).token)
    async with client:
        await client.get("/", headers={BUDGET_HEADER: "500"})
        await client.get("/", headers={BUDGET_HEADER: "90000"})
    assert seen[0].headers.get_list(BUDGET_HEADER) == ["500"]
    (replaced,) = seen[1].headers.get_list(BUDGET_HEADER)
    assert 29_000 < int(replaced) <= 30_000


@pytest.mark.anyio
async def test_a_504_once_the_budget_ran_out_ends_the_call_by_the_tokens_deadline(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deadline half a second away (the bound on the wait raised to match): the downstream
    # answers at once, having spent the whole budget on the transport's clock.
    monkeypatch.setattr(fastapi_abort.httpx, "_OUTLAST", 1.0)
    token = CancellationTokenSource(timeout=0.5).token
    client, seen = client_of(token, status=504, spends=0.5, clock=clock)
    async with client:
        with anyio.fail_after(WAIT), pytest.raises(OperationCancelled) as raised:
            await client.get("/")
    assert len(seen) == 1
    assert raised.value.reason is CancellationReason.DEADLINE


@pytest.mark.anyio
async def test_a_504_within_the_budget_or_with_the_deadline_far_is_the_callers(
    clock: Clock,
) -> None:
    # The downstream's own deadline, shorter than the budget; and a deadline put off after the
    # budget was sent (as if): the 504 is an answer like any other.
    for spends in (0.0, 30.0):
        token = CancellationTokenSource(timeout=30).token
        client, _ = client_of(token, status=504, spends=spends, clock=clock)
        async with client:
            assert (await client.get("/")).status_code == 504
        assert not token.is_cancellation_requested
