"""Part 2: from the client's close() to the server noticing, in one clock for both processes.

``time.monotonic()`` is CLOCK_MONOTONIC, one clock for the whole machine on Linux: the client
stamps just before ``close()``, the server stamps in the token's registered callback (or when
``request.is_disconnected()`` first says so), and the driver fetches the server's stamp.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.app import new_id
from benchmarks.harness import WAIT, Held, Server, ServerError, latency_summary, open_request

#: name -> (server variant, path for a trial id, what it is, the range of ``after``)
MODES = {
    "abort": (
        "abort",
        "/watch/{rid}",
        "fastapi-abort: a callback registered on the token",
        (0.002, 0.012),
    ),
    "abort_early": (
        "abort",
        "/watch/{rid}",
        "fastapi-abort, client leaves at once (within watcher_delay)",
        (0.0, 0.0),
    ),
    "poll_10ms": (
        "plain",
        "/poll/{rid}?interval=0.01",
        "is_disconnected() every 10 ms",
        (0.002, 0.012),
    ),
    "poll_100ms": (
        "plain",
        "/poll/{rid}?interval=0.1",
        "is_disconnected() every 100 ms",
        (0.002, 0.102),
    ),
}
GOALS_P99_MS = {0: 1.0, 1000: 10.0}


@dataclass(frozen=True)
class Settings:
    rounds: int
    trials_per_round: int
    loaded: int


def trial(server: Server, mode: str) -> float:
    """One trial: start the request, wait until it has run for a random while (announced by the
    server, so the close lands at a random phase of any polling loop and, but for
    ``abort_early``, after the watcher has started), close, and fetch the server's stamp."""
    _variant, path, _what, (low, high) = MODES[mode]
    rid = new_id()
    path = path.format(rid=rid)
    path += ("&" if "?" in path else "?") + f"after={random.uniform(low, high):.6f}"
    sock = open_request(server, path)
    try:
        if not server.get(f"/_bench/started/{rid}", wait=WAIT)["happened"]:
            raise ServerError(f"{server.variant}: trial {rid} never started")
    finally:
        closed_at = time.monotonic()
        sock.close()
    stamp = server.get(f"/_bench/done/{rid}", wait=WAIT)["stamp"]
    if stamp is None:
        raise ServerError(f"{server.variant}: trial {rid} never saw its client leave")
    return float(stamp) - closed_at


def measure(
    by_variant: dict[str, Server], held: int, rounds: int, trials: int
) -> dict[str, list[float]]:
    """Trials of every mode with ``held`` other requests in flight, interleaved by round."""
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    holders = {variant: Held(server) for variant, server in by_variant.items()}
    try:
        for holder in holders.values():
            holder.grow(held)
        for _ in range(rounds):
            for mode, (variant, *_rest) in MODES.items():
                server = by_variant[variant]
                samples[mode].extend(trial(server, mode) for _ in range(trials))
    finally:
        for holder in holders.values():
            holder.close()
    return samples


def run(plain: Server, abort: Server, settings: Settings) -> dict[str, Any]:
    by_variant = {"plain": plain, "abort": abort}
    measure(by_variant, 0, 1, 2)  # warm-up
    results: dict[str, Any] = {
        "modes": {mode: what for mode, (_v, _p, what, _r) in MODES.items()},
        "goals_p99_ms": {str(k): v for k, v in GOALS_P99_MS.items()},
    }
    for held in (0, settings.loaded):
        samples = measure(by_variant, held, settings.rounds, settings.trials_per_round)
        results[str(held)] = {
            mode: {"summary": latency_summary(values), "seconds": values}
            for mode, values in samples.items()
        }
        line = ", ".join(
            f"{mode} p50 {results[str(held)][mode]['summary']['p50_ms']:.2f} ms" for mode in samples
        )
        print(f"  latency, {held} in flight: {line}", flush=True)
    return results
