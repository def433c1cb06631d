"""Run an app under one server configuration on an inherited listening socket, and manage it.

``python -m tests.chaos.serve KIND FD MODULE:ATTR``: like ``tests.serve``, the caller binds and
listens on 127.0.0.1 itself, so the port is known and connections queue in the backlog until the
server accepts them; no readiness polling. Logging goes to stderr in one format for every server
(``tests.chaos.logs``); access logs are off, and the backlog is deep enough for every connection
of the run.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.logs import configure_logging
from tests.serve import KINDS, UVICORN

ROOT = Path(__file__).resolve().parent.parent.parent
BACKLOG = 4096
#: Both servers' default, said out loud: hypercorn ends the task of an idle keep-alive connection
#: that the client closed only when this runs out (``protocol/h11.py`` ignores ``Closed`` without a
#: stream; ``asyncio/tcp_server.py`` waits for ``_idle_timeout``), so the run's settling waits
#: that long. The client reuses only connections idle for less (``client.REUSE_SECONDS``).
KEEP_ALIVE_SECONDS = 5


def raise_nofile() -> None:
    """Raise the soft limit on open files to the hard limit (the run opens hundreds at once)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def serve(kind: str, fd: int, ref: str) -> None:
    raise_nofile()
    configure_logging()
    sock = socket.socket(fileno=fd)
    if kind in UVICORN:
        import uvicorn

        http, loop = UVICORN[kind]
        config = uvicorn.Config(
            ref,
            http=http,
            loop=loop,
            log_config=None,
            log_level="info",
            access_log=False,
            backlog=BACKLOG,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        uvicorn.Server(config).run(sockets=[sock])
        return
    from hypercorn.config import Config

    hconfig = Config()
    hconfig.bind = [f"fd://{fd}"]
    hconfig.backlog = BACKLOG
    hconfig.keep_alive_timeout = KEEP_ALIVE_SECONDS
    hconfig.loglevel = "INFO"
    # A Logger, not "-": hypercorn then adds no handler of its own, and the lines reach the
    # root handler in the common format.
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.accesslog = None
    app = load(ref)
    if kind == "hypercorn-asyncio":
        from hypercorn.asyncio import serve as serve_asyncio

        asyncio.run(serve_asyncio(app, hconfig))
    elif kind == "hypercorn-trio":
        import trio
        from hypercorn.trio import serve as serve_trio

        trio.run(serve_trio, app, hconfig)
    else:
        raise SystemExit(f"unknown server kind {kind!r}; one of {KINDS}")


@dataclass
class Server:
    """A server running in a child process, as the client sees it."""

    kind: str
    port: int
    pid: int
    log: Path

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM of the server process, in KiB, from /proc/PID/status."""
        values: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0])
        return values

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running(kind: str, ref: str, log: Path) -> Iterator[Server]:
    """Start ``ref`` under ``kind`` on a free port of 127.0.0.1; stop it on exit."""
    if kind not in KINDS:
        raise ValueError(f"unknown server kind {kind!r}; one of {KINDS}")
    raise_nofile()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(BACKLOG)
    listener.set_inheritable(True)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.serve", kind, str(listener.fileno()), ref],
            pass_fds=[listener.fileno()],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield Server(kind, listener.getsockname()[1], process.pid, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server is a failure too
            process.kill()
            process.wait(timeout=15)
        listener.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
