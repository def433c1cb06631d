"""``python -m tests.suites [fastapi|starlette ...] [--mode construct|late] [--diff FILE]``.

Prepares each suite (sources and venv, on first use), runs it as shipped and patched at once,
and prints the comparison; exits 1 if any test differs. ``--diff`` also writes the differing
test ids there, one a line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.suites.compare import run_both, summary
from tests.suites.hook import CONSTRUCT, MODES
from tests.suites.venvs import SUITES, prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.suites", description=__doc__)
    parser.add_argument("suites", nargs="*", default=list(SUITES), help=f"of {list(SUITES)}")
    parser.add_argument("--mode", choices=MODES, default=CONSTRUCT)
    parser.add_argument("--diff", type=Path, default=None)
    args = parser.parse_args(argv)
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suites {unknown}: choose from {list(SUITES)}")
    differing: list[str] = []
    for name in args.suites:
        comparison = run_both(prepare(SUITES[name]), args.mode)
        print(summary(comparison), flush=True)
        differing += [f"{name}:{d.test}" for d in comparison.differences]
    if args.diff is not None:
        args.diff.write_text("".join(f"{test}\n" for test in differing))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
