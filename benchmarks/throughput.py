"""Part 1: requests per second under wrk, fastapi-abort as a ratio to plain FastAPI."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Server, spread
from benchmarks.system import CLIENT_CORE, has_core

#: (name, path, what the abort side does there)
CASES = (
    ("unused", "/json", "middleware installed, endpoint does not take the token"),
    ("token", "/token", "endpoint takes the token (plain: a no-op Request dependency)"),
    ("stream", "/stream", "StreamingResponse of 5 chunks, token checked per chunk"),
)
GOALS = {"unused": 0.97, "token": 0.90}
CONNECTIONS = 50


@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: int


def wrk(server: Server, path: str, seconds: int) -> float:
    """Requests per second from one wrk run, pinned to the client core."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", f"{server.url}{path}"]
    if has_core(CLIENT_CORE):
        command = ["taskset", "-c", str(CLIENT_CORE), *command]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if match is None or errors is not None:
        raise RuntimeError(f"wrk on {path} failed or saw errors:\n{out}")
    return float(match.group(1))


def run(plain: Server, abort: Server, settings: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {"connections": CONNECTIONS, "seconds": settings.seconds}
    for name, path, what in CASES:
        # Warm both sides up (imports, caches, the first connections) before measuring.
        wrk(plain, path, 1)
        wrk(abort, path, 1)
        plain_rps: list[float] = []
        abort_rps: list[float] = []
        for _ in range(settings.rounds):  # A B A B ...
            plain_rps.append(wrk(plain, path, settings.seconds))
            abort_rps.append(wrk(abort, path, settings.seconds))
        ratios = [a / p for a, p in zip(abort_rps, plain_rps, strict=True)]
        results[name] = {
            "path": path,
            "what": what,
            "plain_rps": plain_rps,
            "abort_rps": abort_rps,
            "ratios": ratios,
            "ratio": spread(ratios),
            "goal": GOALS.get(name),
        }
        print(f"  throughput {name}: ratio {spread(ratios)['median']:.3f}", flush=True)
    return results
