"""Part 1: requests per second under wrk, fastapi-abort as a ratio to plain FastAPI.

Each round starts a fresh plain server and a fresh fastapi-abort server, warms both up, then
loads both *at the same moments* (one wrk each, started together, in alternating order) while
they share the server core. Why both at once: on a shared machine the speed of a core drifts by
several per cent from one second to the next, and a side measured alone takes whatever drift
its seconds had; measured together, both sides meet the same drift, and their ratio is the ratio
of their costs. Why fresh processes each round: two processes of the *same* app differ by up to
4 % (where each one's objects and hash tables happen to fall; measured plain against plain with
one process per side for the whole run: 1.043), and only new processes every round average
that out. Server CPU time per request (from ``/proc``) is recorded next to requests/s.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import Server, servers, spread
from benchmarks.system import CLIENT_CORE, cpu_seconds, has_core

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


def start_wrk(server: Server, path: str, seconds: int) -> subprocess.Popen[str]:
    """One wrk run, pinned to the client core; read it with :func:`wrk_result`."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", f"{server.url}{path}"]
    if has_core(CLIENT_CORE):
        command = ["taskset", "-c", str(CLIENT_CORE), *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def wrk_result(run: subprocess.Popen[str], path: str, seconds: int) -> tuple[float, int]:
    """(requests per second, requests) of a wrk run."""
    out, _ = run.communicate(timeout=seconds + 30)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if run.returncode != 0 or rate is None or count is None or errors is not None:
        raise RuntimeError(f"wrk on {path} failed or saw errors:\n{out}")
    return float(rate.group(1)), int(count.group(1))


def together(
    plain: Server, abort: Server, path: str, seconds: int, abort_first: bool
) -> dict[str, float]:
    """Load both servers at once; each side's requests/s and CPU microseconds per request."""
    cpu = {"plain": cpu_seconds(plain.pid), "abort": cpu_seconds(abort.pid)}
    order = (
        [("abort", abort), ("plain", plain)]
        if abort_first
        else [("plain", plain), ("abort", abort)]
    )
    runs = {name: start_wrk(server, path, seconds) for name, server in order}
    out: dict[str, float] = {}
    for name, server in order:
        rate, count = wrk_result(runs[name], path, seconds)
        out[f"{name}_rps"] = rate
        # No request in the time (a warm-up second on a machine loaded by other work): no
        # figure, rather than a crash of the whole run.
        used = cpu_seconds(server.pid) - cpu[name]
        out[f"{name}_cpu_us"] = used / count * 1e6 if count else math.nan
    return out


def run(log_dir: Path, settings: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {
        "connections": CONNECTIONS,
        "seconds": settings.seconds,
        "method": "fresh servers each round, both loaded at once",
    }
    samples: dict[str, dict[str, list[float]]] = {
        name: {"plain_rps": [], "abort_rps": [], "plain_cpu_us": [], "abort_cpu_us": []}
        for name, _, _ in CASES
    }
    for round_ in range(settings.rounds):
        with servers(log_dir, "plain", "abort") as (plain, abort):
            for name, path, _ in CASES:
                # Warm both up (imports, caches, the first connections) before measuring.
                together(plain, abort, path, 1, abort_first=False)
                sample = together(plain, abort, path, settings.seconds, round_ % 2 == 1)
                for key, value in sample.items():
                    samples[name][key].append(value)
    for name, path, what in CASES:
        case = samples[name]
        ratios = [a / p for a, p in zip(case["abort_rps"], case["plain_rps"], strict=True)]
        cpu_ratios = [
            p / a for a, p in zip(case["abort_cpu_us"], case["plain_cpu_us"], strict=True)
        ]
        results[name] = {
            "path": path,
            "what": what,
            **case,
            "ratios": ratios,
            "ratio": spread(ratios),
            "cpu_ratios": cpu_ratios,
            "cpu_ratio": spread(cpu_ratios),
            "goal": GOALS.get(name),
        }
        print(
            f"  throughput {name}: ratio {spread(ratios)['median']:.3f}, "
            f"by CPU per request {spread(cpu_ratios)['median']:.3f}",
            flush=True,
        )
    return results
