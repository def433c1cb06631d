"""Micro-benchmarks: what fastapi-abort costs per request, in process, without sockets.

``python -m benchmarks.micro [time|memory|callgrind]`` drives the apps of ``benchmarks.app``
(plain FastAPI, and the same routes with ``install(app)``) straight through ASGI on uvloop, with
a fake server whose ``receive`` and ``send`` behave like uvicorn's, and reports the difference:

* ``time``: microseconds per request, plain and fastapi-abort, interleaved rounds, medians.
  Noisy on a loaded machine, but quick.
* ``callgrind``: instructions per request under ``valgrind --tool=callgrind``, the same whatever
  else the machine is doing: the figure to compare a change by. Only the requests after a
  warm-up are counted (start-up and imports are not).
* ``memory``: bytes per held request (tracemalloc), ``--held`` requests held at once past the
  watcher's delay, so that each fastapi-abort request has its token and its watcher; waiting
  in ``ct.wait()`` (as the full suite does), and waiting as plain FastAPI does (the token and
  its watcher alone).

The real suite (``python -m benchmarks``) measures what users see; this one says where a change
moves the cost, and by how much.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import gc
import os
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import uvloop
from fastapi import FastAPI
from starlette.types import Message

from benchmarks.app import VARIANTS, board, build
from benchmarks.harness import WAIT

#: (name, path): the throughput cases of the full suite.
CASES = (("unused", "/json"), ("token", "/token"), ("stream", "/stream"))
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
#: Requests in flight at once, as wrk's connections in the full suite.
IN_FLIGHT = 50
#: The environment variable that sets the memory layout of a callgrind run.
LAYOUT = "BENCH_LAYOUT"
COLLECTED = re.compile(r"Collected : (\d+)")


class Parked:
    """How many fake servers have a reader waiting in ``receive()``; wait for a count."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def change(self, delta: int) -> None:
        self.count += delta
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, count: int) -> None:
        with anyio.fail_after(WAIT):
            while self.count < count:
                await self._changed.wait()


class FakeServer:
    """One request's ``receive`` and ``send``, shaped like uvicorn's (httptools_impl.py).

    ``receive`` returns the (empty) body once, then waits on an ``asyncio.Event`` until the
    response is complete or the client leaves, then returns ``http.disconnect``.
    """

    __slots__ = ("_body_sent", "_event", "_parked", "complete", "gone")

    def __init__(self, parked: Parked | None = None) -> None:
        self._body_sent = False
        self._event = asyncio.Event()
        self._parked = parked
        self.complete = False
        self.gone = False

    async def receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self.gone and not self.complete:
            parked = self._parked
            if parked is not None:
                parked.change(1)
            try:
                await self._event.wait()
            finally:
                if parked is not None:
                    parked.change(-1)
            self._event.clear()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
            self._event.set()

    def leave(self) -> None:
        self.gone = True
        self._event.set()


def scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": HEADERS,
        "state": {},
    }


async def one(app: FastAPI, path: str, server: FakeServer) -> None:
    await app(scope(path), server.receive, server.send)


async def serve(app: FastAPI, path: str, requests: int) -> None:
    """``requests`` requests, each in its own task as servers run them, ``IN_FLIGHT`` at a time
    (so that the loop turns between batches, as it does under wrk's 50 connections)."""
    for done in range(0, requests, IN_FLIGHT):
        batch = [
            asyncio.create_task(one(app, path, FakeServer()))
            for _ in range(min(IN_FLIGHT, requests - done))
        ]
        await asyncio.gather(*batch)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(main())


# -- time ------------------------------------------------------------------------------------


def time_cases(requests: int, rounds: int) -> None:
    apps = {variant: build(variant) for variant in VARIANTS}

    async def main() -> None:
        for name, path in CASES:
            for app in apps.values():
                await serve(app, path, requests // 10)  # warm-up
            per_request: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
            for _ in range(rounds):  # A B A B ...
                for variant, app in apps.items():
                    began = time.perf_counter()
                    await serve(app, path, requests)
                    per_request[variant].append((time.perf_counter() - began) / requests * 1e6)
            plain = statistics.median(per_request["plain"])
            abort = statistics.median(per_request["abort"])
            relay = statistics.median(per_request["relay"])
            print(
                f"{name:8} plain {plain:7.2f} us  fastapi-abort {abort:7.2f} us  "
                f"extra {abort - plain:+6.2f} us/request (relay only {relay - plain:+6.2f})",
                flush=True,
            )

    run(main)


# -- callgrind -------------------------------------------------------------------------------


def count(variant: str, path: str, requests: int) -> None:
    """The body of one callgrind run: warm up, then serve ``requests`` requests inside
    ``functools.reduce``, the one C function callgrind is told to count in."""
    # Shifts where the app's and the requests' objects land in memory (see instructions()).
    padding = [[None] * (i % 7) for i in range(len(os.environ.get(LAYOUT, "")))]
    app = build(variant)
    loop = uvloop.new_event_loop()
    loop.run_until_complete(serve(app, path, 200))
    # Start-up objects out of the collector's way: a full collection over them costs millions
    # of instructions, at moments that depend on the count of requests.
    gc.collect()
    gc.freeze()

    def measured(_: None, __: None) -> None:
        loop.run_until_complete(serve(app, path, requests))

    functools.reduce(measured, [None], None)
    loop.close()
    del padding


def instructions(variant: str, path: str, requests: int, layout: int = 0) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        # Count only what runs inside functools.reduce: the requests, not the start-up.
        "--toggle-collect=functools_reduce",
        sys.executable,
        "-m",
        "benchmarks.micro",
        "count",
        variant,
        path,
        str(requests),
    ]
    # A fixed hash seed: the same string hashes, run after run. Objects hashed by address
    # (tasks in asyncio's set of tasks, for one) still collide differently when the memory
    # layout shifts (any change to the code shifts it), by up to a thousand instructions per
    # request: each layout shifts the stack and the heap, and the median is reported.
    env = {**os.environ, "PYTHONHASHSEED": "0", LAYOUT: "x" * 97 * layout}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    match = COLLECTED.search(done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr}")
    return int(match.group(1))


def callgrind_cases(requests: int, layouts: int, cases: list[str]) -> None:
    with concurrent.futures.ThreadPoolExecutor(len(VARIANTS)) as pool:
        for name, path in CASES:
            if cases and name not in cases:
                continue
            runs = {
                variant: [
                    pool.submit(instructions, variant, path, requests, layout)
                    for layout in range(layouts)
                ]
                for variant in VARIANTS
            }
            counts = {
                variant: [run.result() / requests for run in variant_runs]
                for variant, variant_runs in runs.items()
            }
            plain = statistics.median(counts["plain"])
            for variant, label in (("abort", "fastapi-abort"), ("relay", "relay only")):
                side = counts[variant]
                extra = [s - p for s, p in zip(side, counts["plain"], strict=True)]
                print(
                    f"{name:8} plain {plain:9,.0f}  {label:13} {statistics.median(side):9,.0f}  "
                    f"extra {statistics.median(extra):+8,.0f} ({min(extra):+,.0f} to "
                    f"{max(extra):+,.0f}) instructions/request "
                    f"({statistics.median(side) / plain:.3f}x)",
                    flush=True,
                )


# -- memory ----------------------------------------------------------------------------------


def memory(held: int, rounds: int) -> None:
    apps = {variant: build(variant) for variant in VARIANTS}

    async def hold(variant: str, held: int, path: str = "/hold") -> float:
        parked = Parked()
        servers = [FakeServer(parked) for _ in range(held)]
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        app = apps[variant]
        tasks = [asyncio.create_task(one(app, path, server)) for server in servers]
        # Every request parked in its endpoint; on the fastapi-abort side, its watcher
        # started (once its delay passed) and parked in the server's receive().
        if not await board.until(lambda: board.counts.get("held", 0) >= held, WAIT):
            raise RuntimeError("the requests did not all arrive")
        if variant != "plain":
            await parked.until(held)
        gc.collect()
        during = tracemalloc.get_traced_memory()[0]
        for event in board.releases:
            event.set()
        board.releases.clear()
        for server in servers:
            server.leave()
        await asyncio.gather(*tasks)
        return (during - before) / held

    #: name: (variant, path). The fastapi-abort request waits in ct.wait(), plain FastAPI's in
    #: anyio.Event().wait(); "token alone" takes the token but waits as plain FastAPI does.
    sides = {
        "plain": ("plain", "/hold"),
        "fastapi-abort": ("abort", "/hold"),
        "token alone": ("abort", "/hold-event"),
    }

    async def main() -> None:
        for variant, path in sides.values():
            await hold(variant, 100, path)  # warm-up
        tracemalloc.start()
        per_request: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(rounds):
            for name, (variant, path) in sides.items():
                per_request[name].append(await hold(variant, held, path))
        tracemalloc.stop()
        plain = statistics.median(per_request["plain"])
        for name in ("fastapi-abort", "token alone"):
            side = statistics.median(per_request[name])
            print(
                f"held {held}: plain {plain:,.0f} B  {name} {side:,.0f} B  "
                f"extra {side - plain:+,.0f} B/request (tracemalloc)"
            )

    run(main)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    timed = commands.add_parser("time", help="microseconds per request")
    timed.add_argument("--requests", type=int, default=20_000)
    timed.add_argument("--rounds", type=int, default=7)
    grind = commands.add_parser("callgrind", help="instructions per request")
    grind.add_argument("--requests", type=int, default=1_000)
    grind.add_argument("--layouts", type=int, default=5, help="memory layouts, median reported")
    grind.add_argument("cases", nargs="*", help="some of: " + ", ".join(n for n, _ in CASES))
    held = commands.add_parser("memory", help="bytes per held request")
    held.add_argument("--held", type=int, default=2_000)
    held.add_argument("--rounds", type=int, default=3)
    one = commands.add_parser("count", help="(internal) one callgrind run")
    one.add_argument("variant", choices=VARIANTS)
    one.add_argument("path")
    one.add_argument("requests", type=int)
    args = parser.parse_args()
    if args.command == "time":
        time_cases(args.requests, args.rounds)
    elif args.command == "callgrind":
        callgrind_cases(args.requests, args.layouts, args.cases)
    elif args.command == "memory":
        memory(args.held, args.rounds)
    else:
        count(args.variant, args.path, args.requests)


if __name__ == "__main__":
    main()
