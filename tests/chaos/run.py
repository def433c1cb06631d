"""One chaos run against one server: warm up, measure, run the plan, account, measure again."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.accounting import Accounting, account
from tests.chaos.client import Client, Outcome, control, plan
from tests.chaos.logs import summarise
from tests.chaos.serve import running
from tests.serve import Served

APP = "tests.chaos.app:app"
#: How long the server may take, once the clients are done, to finish every request and to let
#: its connection tasks end. Far more than it needs: the bound only keeps a failure from hanging.
SETTLE_SECONDS = 30.0
#: Drain the server's records every this many steps, so that they do not pile up in its memory.
DRAIN_EVERY = 250
#: How much resident memory may grow from after the warm-up to after the run. See
#: docs/reliability.md for how it was chosen.
MEMORY_BOUND_KIB = 16 * 1024


@dataclass
class Snapshot:
    stats: dict[str, Any]
    rss_kib: int
    hwm_kib: int


@dataclass
class Report:
    server: str
    seed: int
    requests: int
    concurrency: int
    warmup: int
    seconds: float
    accounting: Accounting
    idle: Snapshot
    before: Snapshot
    after: Snapshot
    leaks: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, int]:
        """Every count that must be zero and is not."""
        counts = {**self.accounting.errors, **self.leaks}
        return {name: count for name, count in counts.items() if count}


async def _snapshot(server: Served, tasks_at_most: int | None = None) -> Snapshot:
    query = "" if tasks_at_most is None else f"?tasks_at_most={tasks_at_most}&timeout=15"
    stats = await control(server.port, f"/_ctl/stats{query}")
    status = server.status()
    return Snapshot(stats, status["VmRSS"], status["VmHWM"])


async def _drain(server: Served, records: dict[str, dict[str, Any]], wait: float = 0.0) -> Any:
    answer = await control(server.port, f"/_ctl/drain?wait={wait}")
    for record in answer["finished"]:
        records[record["rid"]] = record
    return answer


def _leaks(idle: Snapshot, before: Snapshot, after: Snapshot) -> dict[str, int]:
    """How far the server is from its idle state after the run (each must be zero)."""
    stats = after.stats
    live = stats["live"]
    return {
        "leaked_tasks": max(0, stats["tasks"] - idle.stats["tasks"]),
        "leaked_threads": max(0, stats["other_threads"] - idle.stats["other_threads"]),
        "pool_over_limit": max(0, stats["pool_threads"] - stats["pool_limit"]),
        "busy_pool_threads": stats["pool_borrowed"],
        # A request's state, source and token (and a linked one) per idle worker that still
        # holds its last job, on the anyio versions that keep it (see the app's stats).
        "live_library_objects": max(
            0,
            sum(live.values())
            - (4 * stats["pool_threads"] if stats.get("pool_keeps_last_result") else 0),
        ),
        "held_records": stats["records_held"] + stats["waiters"],
        "memory_over_bound_kib": max(0, after.rss_kib - before.rss_kib - MEMORY_BOUND_KIB),
    }


async def _run(server: Served, requests: int, concurrency: int, seed: int, warmup: int) -> Report:
    records: dict[str, dict[str, Any]] = {}
    client = Client(server.port)

    async def drain() -> None:
        await _drain(server, records)

    started = time.perf_counter()
    idle = await _snapshot(server)
    outcomes: list[Outcome] = []
    # The warm-up runs the same mix at the same concurrency, so that the allocator's high-water
    # mark and the thread pool are where the run will take them; it is accounted like the rest.
    outcomes += await client.run(plan(seed + 1, warmup, "w"), concurrency, DRAIN_EVERY, drain)
    await _drain(server, records, SETTLE_SECONDS)
    before = await _snapshot(server, idle.stats["tasks"])
    outcomes += await client.run(plan(seed, requests, "r"), concurrency, DRAIN_EVERY, drain)
    running_ids: list[str] = (await _drain(server, records, SETTLE_SECONDS))["running"]
    after = await _snapshot(server, idle.stats["tasks"])
    seconds = time.perf_counter() - started
    accounting = account(outcomes, records, running_ids, summarise(server.output()))
    return Report(
        server.kind,
        seed,
        requests,
        concurrency,
        warmup,
        seconds,
        accounting,
        idle,
        before,
        after,
        _leaks(idle, before, after),
    )


def run_chaos(
    kind: str,
    requests: int,
    concurrency: int,
    seed: int,
    warmup: int | None = None,
    log: Path | None = None,
    app: str = APP,
) -> Report:
    """Start ``kind`` with the chaos app, run ``requests`` steps of the plan of ``seed`` (after
    ``warmup`` steps, as many by default), and account for every one.

    ``app``: the app to serve, ``module:attribute`` (the chaos app unless told otherwise).
    """
    if warmup is None:
        warmup = requests
    with tempfile.TemporaryDirectory() as tmp:
        path = log or Path(tmp) / "server.log"
        with running(kind, app, path) as server:
            return asyncio.run(_run(server, requests, concurrency, seed, warmup))


def format_report(report: Report) -> str:
    """The report as text: per kind, then every count that must be zero, then resources."""
    acc = report.accounting
    total = report.requests + report.warmup
    lines = [
        f"server {report.server}: {total} requests ({report.warmup} warm-up + "
        f"{report.requests}), {report.concurrency} concurrent, seed {report.seed}, "
        f"{report.seconds:.1f} s",
        f"{'kind':<16}{'run':>7}{'reached':>9}{'expected':>10}{'tripped':>9}"
        f"{'completed':>11}{'missed':>8}{'false':>7}",
    ]
    for name, kind in acc.kinds.items():
        lines.append(
            f"{name:<16}{kind.run:>7}{kind.reached:>9}{kind.trips_expected:>10}"
            f"{kind.tripped:>9}{kind.completed:>11}{kind.missed:>8}{kind.false:>7}"
        )
    lines.append("must be zero: " + ", ".join(f"{k} {v}" for k, v in acc.errors.items()))
    lines.append("leaks (must be zero): " + ", ".join(f"{k} {v}" for k, v in report.leaks.items()))
    lines.append(f"warnings logged: {acc.warnings}")
    for when, snap in (("idle", report.idle), ("before", report.before), ("after", report.after)):
        stats = snap.stats
        lines.append(
            f"{when:<7} tasks {stats['tasks']}, threads {stats['threads']} "
            f"({stats['other_threads']} + {stats['pool_threads']} pool, "
            f"{stats['pool_borrowed']} busy), live {stats['live']}, "
            f"gc found {stats['gc_collected']}, RSS {snap.rss_kib} KiB (peak {snap.hwm_kib})"
        )
    for name, examples in acc.examples.items():
        lines.append(f"{name}:")
        lines.extend(f"    {example}" for example in examples)
    return "\n".join(lines)
