"""Every request accounted for: what the client did against what the server recorded and logged."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.client import MIX, Outcome, Step
from tests.chaos.logs import LogSummary

#: The counts that must all be zero; each names one way the promise can break.
ERROR_COUNTS = (
    "missed_trips",
    "false_trips",
    "inconsistent",
    "duplicate_lines",
    "lines_for_completed",
    "missing_lines",
    "stray_lines",
    "bad_callbacks",
    "wrong_reason",
    "foreign_tokens",
    "unaccounted",
    "still_running",
    "client_errors",
    "error_logs",
)


@dataclass
class KindCounts:
    run: int = 0
    #: Reached the app (the server has a record of it).
    reached: int = 0
    trips_expected: int = 0
    tripped: int = 0
    completed: int = 0
    missed: int = 0
    false: int = 0


@dataclass
class Accounting:
    kinds: dict[str, KindCounts] = field(default_factory=lambda: {k: KindCounts() for k in MIX})
    counts: Counter[str] = field(default_factory=Counter)
    #: A few examples per error count, for the report.
    examples: dict[str, list[str]] = field(default_factory=dict)
    warnings: int = 0

    def error(self, name: str, example: str) -> None:
        self.counts[name] += 1
        shown = self.examples.setdefault(name, [])
        if len(shown) < 5:
            shown.append(example)

    @property
    def errors(self) -> dict[str, int]:
        return {name: self.counts[name] for name in ERROR_COUNTS}


def account(
    outcomes: list[Outcome],
    records: dict[str, dict[str, Any]],
    running: list[str],
    logs: LogSummary,
) -> Accounting:
    """Match each client step with the server's record of it and its 499 lines.

    ``records``: the final records by request id; ``running``: ids still in the app at the end.
    """
    result = Accounting(warnings=len(logs.warnings))
    for line in logs.errors:
        result.error("error_logs", line)
    for line in logs.foreign_aborted:
        result.error("stray_lines", line)
    seen: set[str] = set()
    for outcome in outcomes:
        step = outcome.step
        rid = step.rid
        seen.add(rid)
        kind = result.kinds[step.kind]
        kind.run += 1
        lines = logs.aborted.get(rid, 0)
        if outcome.error is not None:
            result.error("client_errors", f"{rid} {step.kind} {step.path}: {outcome.error}")
        if rid in running:
            kind.reached += 1
            # The client is gone or done, and the app still runs: its token never tripped.
            result.error("still_running", f"{rid} {step.kind} {step.path}")
            if step.expect == "trip":
                kind.missed += 1
                result.error("missed_trips", f"{rid} {step.kind} {step.path}: still running")
            continue
        record = records.get(rid)
        if record is None:
            # Never reached the app. Only a client that left without waiting may see that.
            if step.expect != "trip" or outcome.confirmed_started:
                result.error("unaccounted", f"{rid} {step.kind} {step.path}: no server record")
            if lines:
                result.error("stray_lines", f"{rid}: {lines} lines, never reached the app")
            continue
        kind.reached += 1
        if not record["same_token"]:
            result.error("foreign_tokens", f"{rid}: the endpoint saw another token")
        if step.expect == "trip":
            kind.trips_expected += 1
        check = _tripped if record["tripped"] else _completed
        check(result, kind, step, record, lines)
    for rid in set(records) - seen:
        result.error("unaccounted", f"{rid}: a server record no client step made")
    for rid in set(logs.aborted) - seen:
        result.error("stray_lines", f"{rid}: a 499 line for no client step")
    return result


def _tripped(
    result: Accounting, kind: KindCounts, step: Step, record: dict[str, Any], lines: int
) -> None:
    where = f"{step.rid} {step.kind} {step.path}"
    kind.tripped += 1
    if record["trips"] != 1:
        result.error("bad_callbacks", f"{where}: the trip callback ran {record['trips']} times")
    if record["reason"] != "client disconnected":
        result.error("wrong_reason", f"{where}: reason {record['reason']!r}")
    if lines == 0:
        result.error("missing_lines", f"{where}: tripped, no 499 line")
    elif lines > 1:
        result.error("duplicate_lines", f"{where}: {lines} lines")
    final_send = record["final_send_seq"]
    if final_send and final_send < record["trip_seq"]:
        # The response was complete (its final send called) before the trip.
        result.error("inconsistent", f"{where}: tripped after the final send")
    if step.expect == "complete":
        kind.false += 1
        result.error("false_trips", f"{where}: the client read the response, the token tripped")


def _completed(
    result: Accounting, kind: KindCounts, step: Step, record: dict[str, Any], lines: int
) -> None:
    where = f"{step.rid} {step.kind} {step.path}"
    kind.completed += 1
    if record["trips"] or not record["completed"]:
        result.error("bad_callbacks", f"{where}: not tripped, yet {record}")
    if lines:
        result.error("lines_for_completed", f"{where}: {lines} lines for a completed response")
    if not record["final_send_seq"]:
        # Final without a trip, and no complete response: the client left unheard.
        result.error("inconsistent", f"{where}: not tripped, and the response never completed")
    if step.expect == "trip":
        kind.missed += 1
        result.error("missed_trips", f"{where}: the client left, the token did not trip")
