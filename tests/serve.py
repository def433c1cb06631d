"""Run an app under one server configuration on an inherited listening socket.

``python -m tests.serve KIND FD [MODULE:APP]`` (``tests.server_app:app`` by default): the test
binds and listens on 127.0.0.1 itself, so the port is known and connections queue in the backlog
until the server accepts them; no readiness polling.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

UVICORN = {"uvicorn-h11": ("h11", "asyncio"), "uvicorn-httptools": ("httptools", "uvloop")}
HYPERCORN = ("hypercorn-asyncio", "hypercorn-trio")
KINDS = (*UVICORN, *HYPERCORN)


ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running(kind: str, log: Path, target: str = "tests.server_app:app") -> Iterator[int]:
    """Run ``target`` under server ``kind`` in a child process; yield its port on 127.0.0.1.

    The server's stdout and stderr go to ``log``. Stopped with SIGTERM on exit (SIGKILL if it
    does not stop within 15 s).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    listener.set_inheritable(True)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.serve", kind, str(listener.fileno()), target],
            pass_fds=[listener.fileno()],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield listener.getsockname()[1]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server is a failure too
            process.kill()
            process.wait(timeout=15)
        listener.close()


def load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run_uvicorn(kind: str, fd: int, target: str) -> None:
    import uvicorn

    http, loop = UVICORN[kind]
    config = uvicorn.Config(target, http=http, loop=loop, log_level="info")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def run_hypercorn(kind: str, fd: int, target: str) -> None:
    from hypercorn.config import Config

    app = load(target)
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.loglevel = "INFO"
    if kind == "hypercorn-asyncio":
        from hypercorn.asyncio import serve as serve_asyncio

        asyncio.run(serve_asyncio(app, config))
    else:
        import trio
        from hypercorn.trio import serve as serve_trio

        trio.run(serve_trio, app, config)


def main(kind: str, fd: int, target: str = "tests.server_app:app") -> None:
    if kind in UVICORN:
        run_uvicorn(kind, fd, target)
    elif kind in HYPERCORN:
        run_hypercorn(kind, fd, target)
    else:
        raise SystemExit(f"unknown server kind {kind!r}; one of {KINDS}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
