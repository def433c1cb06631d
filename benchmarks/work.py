"""Part 3: server CPU seconds burnt after clients abandon slow CPU-bound requests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from benchmarks.app import burn
from benchmarks.harness import WAIT, Server, open_request, spread

KINDS = {
    "async": "async def: a CPU-bound chunk, a token check, await anyio.sleep(0), repeated",
    "sync": "def in the thread pool: a CPU-bound chunk and a token check, repeated",
}
#: About 1 ms of CPU per chunk on the machine of the committed run.
ITERATIONS = 32_000


@dataclass(frozen=True)
class Settings:
    rounds: int
    clients: int
    chunks: int


def abandon(server: Server, kind: str, settings: Settings, chunk_ms: float) -> dict[str, Any]:
    """Start ``clients`` slow requests, close them all once all have arrived, and wait until the
    server has finished them; return the server CPU seconds spent from the close on.

    The waits are bounded by three times the CPU time of all the requests' chunks on top of
    :data:`WAIT`: plain FastAPI computes every abandoned chunk (about 30 s in a full round), and
    the next round's clients arrive only once it is done."""
    budget = WAIT + 3 * settings.clients * settings.chunks * chunk_ms / 1000
    server.get("/_bench/work")  # resets the counters
    path = f"/work-{kind}?chunks={settings.chunks}&iterations={ITERATIONS}"
    first = server.cpu()
    sent = time.monotonic()
    sockets = [open_request(server, path) for _ in range(settings.clients)]
    try:
        server.wait_count("arrived", at_least=settings.clients, wait=budget)
        arrived = time.monotonic()
    finally:
        before = server.cpu()
        started = time.monotonic()
        for sock in sockets:
            sock.close()
    server.wait_count("finished", at_least=settings.clients, wait=budget)
    wall = time.monotonic() - started
    cpu = server.cpu() - before
    stats = server.get("/_bench/work")
    after_trip: list[int] = stats["chunks_after_trip"]
    return {
        "cpu_seconds": cpu,
        "cpu_seconds_in_all": server.cpu() - first,
        "wall_seconds": wall,
        "arrival_seconds": arrived - sent,
        "chunks_run": stats["chunks_run"],
        "chunks_total": settings.clients * settings.chunks,
        "max_chunks_after_trip": max(after_trip) if after_trip else None,
    }


def chunk_cpu_ms() -> float:
    """What one chunk costs here, on the client core (the same CPU model)."""
    started = time.process_time()
    for _ in range(100):
        burn(ITERATIONS)
    return (time.process_time() - started) * 10


def run(plain: Server, abort: Server, settings: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {
        "clients": settings.clients,
        "chunks": settings.chunks,
        "chunk_cpu_ms": chunk_cpu_ms(),
        "kinds": KINDS,
    }
    for kind in KINDS:
        rows: dict[str, list[dict[str, Any]]] = {"plain": [], "abort": []}
        for _ in range(settings.rounds):  # A B A B ...
            rows["plain"].append(abandon(plain, kind, settings, results["chunk_cpu_ms"]))
            rows["abort"].append(abandon(abort, kind, settings, results["chunk_cpu_ms"]))
        saved = [
            p["cpu_seconds"] - a["cpu_seconds"]
            for p, a in zip(rows["plain"], rows["abort"], strict=True)
        ]
        results[kind] = {
            "rounds": rows,
            "plain_cpu": spread([r["cpu_seconds"] for r in rows["plain"]]),
            "abort_cpu": spread([r["cpu_seconds"] for r in rows["abort"]]),
            "saved_cpu": spread(saved),
            "max_chunks_after_trip": max(
                (r["max_chunks_after_trip"] or 0 for r in rows["abort"]), default=0
            ),
        }
        print(
            f"  work {kind}: plain {results[kind]['plain_cpu']['median']:.2f} s, "
            f"abort {results[kind]['abort_cpu']['median']:.3f} s of CPU after the close",
            flush=True,
        )
    return results
