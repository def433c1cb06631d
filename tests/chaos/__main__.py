"""``python -m tests.chaos [--requests N] [--concurrency N] [--server KIND|all] [--seed N]``."""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict
from pathlib import Path

from tests.chaos.run import format_report, run_chaos
from tests.serve import KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--server", choices=(*KINDS, "all"), default="all")
    parser.add_argument("--seed", type=int, default=None, help="random if not given; printed")
    parser.add_argument("--warmup", type=int, default=None, help="as many as --requests by default")
    parser.add_argument("--json", type=Path, default=None, help="also write the reports here")
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    print(f"seed {seed}", flush=True)
    reports = []
    for kind in KINDS if args.server == "all" else (args.server,):
        report = run_chaos(kind, args.requests, args.concurrency, seed, args.warmup)
        print(format_report(report), flush=True)
        reports.append(report)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(report) for report in reports], indent=1))
    return 1 if any(report.failures for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
