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
GOALS = {"unused": 0.98, "token": 0.95, "stream": 0.95}
CONNECTIONS = 50
#: Times a round is tried, on fresh servers, before a wrk failure ends the run.
ATTEMPTS = 3


class WrkError(RuntimeError):
    """A wrk run that failed, saw errors (a socket timeout: a response over 2 s) or completed
    no request."""


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
        raise WrkError(f"wrk on {path} failed or saw errors:\n{out}")
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
    results = {name: wrk_result(runs[name], path, seconds) for name, _ in order}
    out: dict[str, float] = {}
    for name, server in order:
        rate, count = results[name]
        if count == 0:
            raise WrkError(f"wrk on {path}: no response from {name} in {seconds} s")
        out[f"{name}_rps"] = rate
        out[f"{name}_cpu_us"] = (cpu_seconds(server.pid) - cpu[name]) / count * 1e6
    return out


def measure_round(log_dir: Path, seconds: int, abort_first: bool) -> dict[str, dict[str, float]]:
    """One round on two fresh servers: each case warmed up, then measured."""
    with servers(log_dir, "plain", "abort") as (plain, abort):
        samples = {}
        for name, path, _ in CASES:
            # Warm both up (caches, the first connections) before measuring.
            together(plain, abort, path, 1, abort_first=False)
            samples[name] = together(plain, abort, path, seconds, abort_first)
        return samples


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
    # A round that a wrk error ends (a socket timeout, seen once in a few thousand requests
    # on a shared machine) is measured again on fresh servers, and the error kept in the results:
    # a round is all or nothing, so both sides always have the same rounds.
    failures: list[str] = []
    for round_ in range(settings.rounds):
        for attempt in range(ATTEMPTS):
            try:
                measured = measure_round(log_dir, settings.seconds, round_ % 2 == 1)
            except WrkError as error:
                failures.append(f"round {round_ + 1}, attempt {attempt + 1}: {error}")
                print(f"  throughput: round {round_ + 1} measured again: {error}", flush=True)
                if attempt == ATTEMPTS - 1:
                    raise
                continue
            for name, sample in measured.items():
                for key, value in sample.items():
                    samples[name][key].append(value)
            break
    results["failures"] = failures
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
