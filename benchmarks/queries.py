"""Part 5: server-side query seconds spent on reports whose clients left, plain and fastapi-abort.

A throwaway PostgreSQL cluster (:mod:`tests.databases.postgres`, the test suite's own), and the
two apps of :mod:`benchmarks.query_app` on uvicorn, both at once. Report by report, alternating
plain and fastapi-abort: a client asks for the report, waits until its statement has executed on
the server for :data:`LEAD` seconds (``pg_stat_activity``), and leaves; the next report starts
once the server runs no report any more. The seconds each statement ran are read from the
server's log afterwards: its ``duration:`` line when it ran to its end (``log_duration``), or, when
it was cancelled, from its ``execute`` line to its ``ERROR`` line (millisecond timestamps).
"""

from __future__ import annotations

import re
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.query_app import MARK
from tests.databases.postgres import MISSING, Cluster, binaries, cluster
from tests.serve import Served, running

SKIPPED = "  queries: skipped, {reason}"
NO_REPORT = "no report ran on the server within {bound} s"
STILL_RUNNING = "a report still ran on the server after {bound} s"
DATABASE = "bench"
WATCHER = "fastapi-abort-bench-watcher"
#: Seconds a statement has executed before its client leaves: past the instant in which the
#: server ignores a cancel (docs/databases.md, Limits), well before its end.
LEAD = 0.1
#: Bound on each wait, seconds: a report that ran to its end takes about 1 s.
BOUND = 60.0
#: Rows of the inner series: a report of about 0.8 s at a load average of 2 on the 2-core machine
#: of the benchmarks page, 2.3 s at a load average of 8.
ROWS = 20_000
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \w+ \[(\d+)\] (.*)$")
DURATION = re.compile(r"^LOG:  duration: ([\d.]+) ms")


@dataclass(frozen=True)
class Settings:
    reports: int


def _stamp(text: str) -> float:
    return time.mktime(time.strptime(text[:19], "%Y-%m-%d %H:%M:%S")) + float(text[19:])


def statement_seconds(log: Path) -> dict[int, list[tuple[str, float]]]:
    """Per backend pid, each report statement's (how it ended, seconds it ran)."""
    started: dict[int, float] = {}
    ended: dict[int, list[tuple[str, float]]] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        stamp, pid, text = _stamp(match[1]), int(match[2]), match[3]
        if text.startswith("LOG:  execute ") and MARK in text:
            started[pid] = stamp
        elif pid in started and (duration := DURATION.match(text)):
            del started[pid]
            ended.setdefault(pid, []).append(("completed", float(duration[1]) / 1000))
        elif pid in started and text.startswith("ERROR:"):
            ended.setdefault(pid, []).append(("cancelled", stamp - started.pop(pid)))
    return ended


def _reports(watcher: psycopg.Connection[tuple[Any, ...]], running_for: float) -> list[int]:
    rows = watcher.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name <> %s"
        " AND state = 'active' AND strpos(query, %s) > 0"
        " AND clock_timestamp() - query_start >= make_interval(secs => %s)",
        (DATABASE, WATCHER, MARK, running_for),
    ).fetchall()
    return [int(pid) for (pid,) in rows]


def abandon(served: Served, watcher: psycopg.Connection[tuple[Any, ...]]) -> int:
    """One report whose client leaves :data:`LEAD` s into its statement; returns once the server
    runs no report. The pid of the backend that ran it."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=BOUND) as client:
        client.sendall(f"GET /report?rows={ROWS} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        deadline = time.monotonic() + BOUND
        while not (pids := _reports(watcher, LEAD)):
            if time.monotonic() > deadline:
                raise RuntimeError(NO_REPORT.format(bound=BOUND))
    deadline = time.monotonic() + BOUND
    while _reports(watcher, 0.0):
        if time.monotonic() > deadline:
            raise RuntimeError(STILL_RUNNING.format(bound=BOUND))
    return pids[0]


def measure(postgres: Cluster, logs: Path, settings: Settings) -> dict[str, Any]:
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {DATABASE}")
        # Every statement's duration in the log from then on (new sessions of that database).
        admin.execute(f"ALTER DATABASE {DATABASE} SET log_duration = on")
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/" + DATABASE
    env = {"BENCH_DATABASE_URL": dsn}
    pids: dict[str, set[int]] = {"plain": set(), "abort": set()}
    with (
        running("uvicorn-h11", logs / "plain.log", "benchmarks.query_app:plain", env=env) as plain,
        running("uvicorn-h11", logs / "abort.log", "benchmarks.query_app:abort", env=env) as abort,
        psycopg.connect(dsn, autocommit=True, application_name=WATCHER) as watcher,
    ):
        # The watcher polls without pause: its own statements kept out of the log.
        watcher.execute("SET log_statement = 'none'")
        watcher.execute("SET log_duration = off")
        for _ in range(settings.reports):  # A B A B ...
            pids["plain"].add(abandon(plain, watcher))
            pids["abort"].add(abandon(abort, watcher))
    ended = statement_seconds(postgres.log)
    results: dict[str, Any] = {"reports": settings.reports, "rows": ROWS, "lead_seconds": LEAD}
    for side, backends in pids.items():
        runs = [run for pid in backends for run in ended.get(pid, [])]
        results[side] = {
            "statements": len(runs),
            "completed": sum(1 for how, _ in runs if how == "completed"),
            "cancelled": sum(1 for how, _ in runs if how == "cancelled"),
            "seconds": sum(seconds for _, seconds in runs),
            "median_seconds": statistics.median(s for _, s in runs) if runs else None,
        }
    results["saved_seconds"] = results["plain"]["seconds"] - results["abort"]["seconds"]
    return results


def run(settings: Settings) -> dict[str, Any]:
    bin_dir = binaries()
    if bin_dir is None:
        print(SKIPPED.format(reason=MISSING), flush=True)
        return {"skipped": MISSING}
    with cluster(bin_dir) as postgres, tempfile.TemporaryDirectory() as logs:
        results = measure(postgres, Path(logs), settings)
    plain, abort = results["plain"], results["abort"]
    print(
        f"  queries: {settings.reports} abandoned reports, server-side query seconds: "
        f"plain {plain['seconds']:.2f} s ({plain['completed']} ran to their end), "
        f"abort {abort['seconds']:.2f} s ({abort['cancelled']} cancelled); "
        f"saved {results['saved_seconds']:.2f} s",
        flush=True,
    )
    return results


if __name__ == "__main__":  # ``python -m benchmarks.queries [REPORTS]``: this part alone
    import json
    import sys

    print(json.dumps(run(Settings(reports=int(sys.argv[1]) if len(sys.argv) > 1 else 10))))
