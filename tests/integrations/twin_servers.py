"""Servers for the tests of :mod:`tests.integrations.apps` apps built twice (with fastapi-abort,
``app``, and without, ``plain``): started on first use, one per server kind and app, for a whole
test module, and what the tests compare of their answers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.serve import Served, running

#: The response headers that differ between any two responses (the clock, a fresh session).
VOLATILE_HEADERS = frozenset({"date"})
QUIET_LINE = r"^{method} {path}: 499 Client Closed Request after \d+\.\d{{3}} s$"

Start = Callable[[str, str], Served]


@contextmanager
def twin_servers(module: str, directory: Path, *allowed: str) -> Iterator[Start]:
    """A function ``start(kind, variant)`` that runs ``module:variant`` under server ``kind``
    (once, reused after), all stopped on exit; none may log above INFO but lines that contain
    one of ``allowed``."""
    started: dict[tuple[str, str], Served] = {}
    with ExitStack() as stack:

        def start(kind: str, variant: str) -> Served:
            if (kind, variant) not in started:
                log = directory / f"{kind}-{variant}.log"
                target = f"{module}:{variant}"
                started[kind, variant] = stack.enter_context(running(kind, log, target))
            return started[kind, variant]

        yield start
        for served in started.values():
            assert not served.noisy(*allowed), served.output()


def headers_of(response: httpx.Response) -> list[tuple[str, str]]:
    """The response's headers in order, but the volatile ones and the server's name (each
    server sends its own, and in its own place)."""
    return [
        (name, value)
        for name, value in response.headers.multi_items()
        if name not in VOLATILE_HEADERS and name != "server"
    ]


def assert_quiet_line(served: Served, path: str, lines: list[str], method: str = "GET") -> None:
    """The request of ``path`` logged exactly one quiet 499 line, in its record and in the
    server's output."""
    assert len(lines) == 1, lines
    assert re.match(QUIET_LINE.format(method=method, path=re.escape(path)), lines[0]), lines
    assert served.output().count(f"{path}: 499 Client Closed Request") == 1
