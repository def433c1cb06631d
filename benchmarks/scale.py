"""Part 4: resident memory per held request, and detection latency, from 1 to 5,000 in flight.

Each round starts fresh servers (memory freed by Python is not always returned to the system, so
a server that has been to 5,000 once would hide the next climb), warms them up, takes a baseline,
then holds more and more requests open, reading the server's RSS and timing a few detection
trials at each level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import Held, Server, latency_summary, servers, spread
from benchmarks.latency import trial

#: variant -> the detection mode timed on it
TRIAL_MODE = {"plain": "poll_10ms", "abort": "abort"}
GOAL_EXTRA_BYTES = 2048


@dataclass(frozen=True)
class Settings:
    rounds: int
    levels: tuple[int, ...]
    trials: int


def sweep(server: Server, settings: Settings) -> list[dict[str, Any]]:
    mode = TRIAL_MODE[server.variant]
    with Held(server) as warm:  # imports, caches and the first connections, outside the baseline
        warm.grow(100)
        for _ in range(settings.trials):
            trial(server, mode)
    baseline = server.rss()
    points: list[dict[str, Any]] = []
    with Held(server) as held:
        for level in settings.levels:
            held.grow(level)
            rss = server.rss()
            seconds = [trial(server, mode) for _ in range(settings.trials)]
            points.append(
                {
                    "held": level,
                    "rss": rss,
                    "baseline": baseline,
                    "bytes_per_request": (rss - baseline) / level,
                    "latency": latency_summary(seconds),
                }
            )
    return points


def run(log_dir: Path, settings: Settings) -> dict[str, Any]:
    sweeps: dict[str, list[list[dict[str, Any]]]] = {"plain": [], "abort": []}
    for _ in range(settings.rounds):  # A B A B ..., each on fresh servers
        for variant in ("plain", "abort"):
            with servers(log_dir, variant) as (server,):
                sweeps[variant].append(sweep(server, settings))
    per_level: dict[str, Any] = {}
    for index, level in enumerate(settings.levels):
        plain = [s[index]["bytes_per_request"] for s in sweeps["plain"]]
        abort = [s[index]["bytes_per_request"] for s in sweeps["abort"]]
        per_level[str(level)] = {
            "plain_bytes": spread(plain),
            "abort_bytes": spread(abort),
            "extra_bytes": spread([a - p for a, p in zip(abort, plain, strict=True)]),
        }
    for level in (1000, 5000):
        if str(level) in per_level:
            extra = per_level[str(level)]["extra_bytes"]["median"]
            print(f"  memory: {extra:.0f} extra bytes per request at {level}", flush=True)
    return {
        "levels": list(settings.levels),
        "trial_modes": TRIAL_MODE,
        "goal_extra_bytes": GOAL_EXTRA_BYTES,
        "sweeps": sweeps,
        "per_level": per_level,
    }
