"""The servers' log output: one format for every server, and what the run reads from it."""

from __future__ import annotations

import logging
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: The library's quiet line, as the format above prints it.
ABORTED_LINE = re.compile(
    r"^INFO fastapi_abort: (?P<method>[A-Z]+) (?P<path>\S+): 499 Client Closed Request "
    r"after \d+\.\d{3} s$"
)


def configure_logging() -> None:
    """Every logger to stderr in one format, INFO and up (the servers' error loggers included).

    Idempotent: the app module and the launcher both call it.
    """
    root = logging.getLogger()
    if any(getattr(handler, "chaos", False) for handler in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.chaos = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)


@dataclass
class LogSummary:
    #: 499 lines per request id (the last segment of the logged path).
    aborted: Counter[str] = field(default_factory=Counter)
    #: 499 lines whose path does not start with the prefix.
    foreign_aborted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def summarise(text: str, prefix: str = "/c/") -> LogSummary:
    """Count the 499 lines per request id (for the paths that start with ``prefix``), and collect
    every line at WARNING or above."""
    summary = LogSummary()
    for line in text.splitlines():
        match = ABORTED_LINE.match(line)
        if match:
            path = match["path"]
            if path.startswith(prefix):
                summary.aborted[path.rsplit("/", 1)[-1]] += 1
            else:
                summary.foreign_aborted.append(line)
        elif line.startswith(("ERROR ", "CRITICAL ")) or "Traceback" in line:
            summary.errors.append(line)
        elif line.startswith("WARNING "):
            summary.warnings.append(line)
    return summary
