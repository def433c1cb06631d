"""The chaos run at CI size, on every server, and the accounting that judges it.

The full size is a command (see the README's development section):
``python -m tests.chaos --requests 5000 --concurrency 200 --server uvicorn-httptools``.
``CHAOS_SEED=N`` replays the plan of a failed run (the seed is in the failure message).
"""

from __future__ import annotations

import gc
import os
import random
import weakref
from collections import Counter
from typing import Any

import pytest

from fastapi_abort import CancellationTokenSource
from tests.chaos.accounting import ERROR_COUNTS, Accounting, account
from tests.chaos.client import MIX, Outcome, plan
from tests.chaos.logs import LogSummary, summarise
from tests.chaos.run import format_report, run_chaos
from tests.serve import KINDS

CI_REQUESTS = 600
CI_CONCURRENCY = 50


def _seed() -> int:
    value = os.environ.get("CHAOS_SEED")
    return int(value) if value else random.randrange(2**32)


@pytest.mark.server
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", KINDS)
def test_every_request_is_accounted_for_under_chaos(kind: str) -> None:
    report = run_chaos(kind, CI_REQUESTS, CI_CONCURRENCY, _seed())
    text = format_report(report)
    print(text)
    assert report.failures == {}, text
    # The run did what it says: every kind ran, and the tokens of clients that left tripped.
    for name, counts in report.accounting.kinds.items():
        assert counts.run > 0, (name, text)
    assert sum(k.tripped for k in report.accounting.kinds.values()) > 0, text


# -- the accounting itself: each way the promise can break is counted -------------------------


def _outcome(kind: str, rid: str = "r00001", **changes: Any) -> Outcome:
    step = next(s for s in plan(7, 200, "r") if s.kind == kind)
    step.rid = rid
    for name, value in changes.items():
        setattr(step, name, value)
    return Outcome(step)


def _record(rid: str = "r00001", tripped: bool = False, **changes: Any) -> dict[str, Any]:
    record = {
        "rid": rid,
        "tripped": tripped,
        "completed": not tripped,
        "trips": int(tripped),
        "trip_seq": 5 if tripped else 0,
        "final_send_seq": 0 if tripped else 5,
        "reason": "client disconnected" if tripped else None,
        "same_token": True,
        "started": True,
    }
    record.update(changes)
    return record


def _logs(**lines: int) -> LogSummary:
    return LogSummary(aborted=Counter(lines))


def _errors(result: Accounting) -> dict[str, int]:
    return {name: count for name, count in result.errors.items() if count}


def test_accounting_passes_a_trip_and_a_completion() -> None:
    outcomes = [_outcome("mid-stream", "r1"), _outcome("complete", "r2")]
    records = {"r1": _record("r1", tripped=True), "r2": _record("r2")}
    result = account(outcomes, records, [], _logs(r1=1))
    assert _errors(result) == {}
    assert result.kinds["mid-stream"].tripped == 1
    assert result.kinds["complete"].completed == 1


def test_accounting_counts_a_client_that_left_unheard_as_a_missed_trip() -> None:
    result = account([_outcome("before-start")], {"r00001": _record()}, [], _logs())
    assert _errors(result) == {"missed_trips": 1}


def test_accounting_counts_a_request_still_running_after_its_client_left() -> None:
    result = account([_outcome("mid-upload")], {}, ["r00001"], _logs())
    assert _errors(result) == {"missed_trips": 1, "still_running": 1}


def test_accounting_counts_a_trip_of_a_response_the_client_read_as_false() -> None:
    result = account([_outcome("complete")], {"r00001": _record(tripped=True)}, [], _logs(r00001=1))
    assert _errors(result) == {"false_trips": 1}


def test_accounting_counts_a_trip_after_the_final_send_as_inconsistent() -> None:
    record = _record(tripped=True, final_send_seq=3)
    result = account(
        [_outcome("last-bytes", expect="either")], {"r00001": record}, [], _logs(r00001=1)
    )
    assert _errors(result) == {"inconsistent": 1}


def test_accounting_counts_log_lines_twice_missing_and_for_completed_responses() -> None:
    outcomes = [_outcome("reset", "r1"), _outcome("reset", "r2"), _outcome("complete", "r3")]
    records = {
        "r1": _record("r1", tripped=True),
        "r2": _record("r2", tripped=True),
        "r3": _record("r3"),
    }
    result = account(outcomes, records, [], _logs(r1=2, r3=1))
    assert _errors(result) == {"duplicate_lines": 1, "missing_lines": 1, "lines_for_completed": 1}


def test_accounting_counts_callbacks_reasons_and_foreign_tokens() -> None:
    outcomes = [_outcome("reset", "r1"), _outcome("reset", "r2"), _outcome("complete", "r3")]
    records = {
        "r1": _record("r1", tripped=True, trips=2),
        "r2": _record("r2", tripped=True, reason="deadline"),
        "r3": _record("r3", same_token=False),
    }
    result = account(outcomes, records, [], _logs(r1=1, r2=1))
    assert _errors(result) == {"bad_callbacks": 1, "wrong_reason": 1, "foreign_tokens": 1}


def test_accounting_counts_requests_and_lines_nobody_made() -> None:
    outcomes = [_outcome("complete", "r1"), _outcome("before-start", "r2", wait_started=True)]
    outcomes[1].confirmed_started = True
    records = {"r9": _record("r9")}
    result = account(outcomes, records, [], _logs(r8=1))
    # r1 got a response with no record; r2 was seen started and has no record; r9 was never sent.
    assert _errors(result) == {"unaccounted": 3, "stray_lines": 1}


def test_accounting_lets_a_client_that_left_before_the_server_read_it_pass() -> None:
    result = account([_outcome("before-start", wait_started=False)], {}, [], _logs())
    assert _errors(result) == {}
    assert result.kinds["before-start"].reached == 0


def test_accounting_counts_client_errors_and_error_logs() -> None:
    outcome = _outcome("complete")
    outcome.error = "TimeoutError: "
    logs = summarise("INFO uvicorn.error: Started\nERROR uvicorn.error: Exception in ASGI app\n")
    result = account([outcome], {"r00001": _record()}, [], logs)
    assert _errors(result) == {"client_errors": 1, "error_logs": 1}


def test_log_summary_counts_499_lines_per_request_id() -> None:
    text = (
        "INFO fastapi_abort: GET /c/hold/r1: 499 Client Closed Request after 0.012 s\n"
        "INFO fastapi_abort: POST /c/upload/r2: 499 Client Closed Request after 1.500 s\n"
        "INFO fastapi_abort: GET /c/hold/r1: 499 Client Closed Request after 0.013 s\n"
        "INFO fastapi_abort: GET /other: 499 Client Closed Request after 0.001 s\n"
        "WARNING asyncio: socket.send() raised exception.\n"
        "Traceback (most recent call last):\n"
    )
    summary = summarise(text)
    assert summary.aborted == Counter({"r1": 2, "r2": 1})
    assert len(summary.foreign_aborted) == 1
    assert len(summary.warnings) == 1
    assert len(summary.errors) == 1


def test_every_error_count_is_reported() -> None:
    assert set(Accounting().errors) == set(ERROR_COUNTS)


def test_the_same_seed_makes_the_same_plan() -> None:
    first, second = plan(42, 300, "r"), plan(42, 300, "r")
    assert first == second
    assert plan(43, 300, "r") != first
    assert {step.kind for step in first} == set(MIX)


# -- found by the run ---------------------------------------------------------------------------


def test_a_cancelled_token_is_freed_as_soon_as_nothing_refers_to_it() -> None:
    source = CancellationTokenSource()
    token = weakref.ref(source.token)
    source.cancel()
    source.close()
    gc.disable()
    try:
        del source
        assert token() is None
    finally:
        gc.enable()
