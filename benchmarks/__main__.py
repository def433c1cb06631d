"""``python -m benchmarks [--quick] [--out DIR]``: run the whole suite, print, write, plot."""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import latency, queries, scale, throughput, work
from benchmarks.harness import ROOT, servers
from benchmarks.report import plot, table
from benchmarks.system import CLIENT_CORE, machine, pin, raise_nofile


@dataclass(frozen=True)
class Plan:
    throughput: throughput.Settings
    latency: latency.Settings
    work: work.Settings
    scale: scale.Settings
    queries: queries.Settings


FULL = Plan(
    throughput.Settings(rounds=10, seconds=3),
    latency.Settings(rounds=5, trials_per_round=60, loaded=1000),
    work.Settings(rounds=3, clients=100, chunks=200),
    scale.Settings(rounds=3, levels=(1, 10, 100, 500, 1000, 2000, 3000, 4000, 5000), trials=30),
    queries.Settings(reports=100),
)
QUICK = Plan(
    throughput.Settings(rounds=2, seconds=1),
    latency.Settings(rounds=2, trials_per_round=10, loaded=1000),
    work.Settings(rounds=1, clients=20, chunks=50),
    scale.Settings(rounds=1, levels=(1, 10, 100, 1000), trials=5),
    queries.Settings(reports=10),
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every part, briefly (CI)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="results directory"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for the throughput part (Debian: apt-get install wrk)")
    plan = QUICK if args.quick else FULL
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    pin(CLIENT_CORE)
    raise_nofile()
    began = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "plan": asdict(plan),
    }
    with tempfile.TemporaryDirectory(prefix="fastapi-abort-bench-") as logs:
        log_dir = Path(logs)
        print("1. throughput", flush=True)
        results["throughput"] = throughput.run(log_dir, plan.throughput)
        with servers(log_dir, "plain", "abort") as (plain, abort):
            print("2. detection latency", flush=True)
            results["latency"] = latency.run(plain, abort, plan.latency)
            print("3. work saved", flush=True)
            results["work"] = work.run(plain, abort, plan.work)
        print("4. memory and scale", flush=True)
        results["scale"] = scale.run(log_dir, plan.scale)
    # Its own servers and its own PostgreSQL cluster; skipped, with the reason, without one.
    print("5. query seconds saved", flush=True)
    results["queries"] = queries.run(plan.queries)
    results["seconds"] = time.monotonic() - began
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out)
    print()
    print(table(results))
    print(f"\n{results['seconds']:.0f} s; results and plots in {out}")


if __name__ == "__main__":
    main()
