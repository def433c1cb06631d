"""Run an app under one server configuration on an inherited listening socket.

``python -m tests.serve KIND FD MODULE:APP [OPTIONS]`` (OPTIONS: :class:`Options` as JSON). The
test binds and listens on 127.0.0.1 itself (:func:`running`), so the port is known and
connections queue in the backlog until the server accepts them; no readiness polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests import ROOT

UVICORN = {"uvicorn-h11": ("h11", "asyncio"), "uvicorn-httptools": ("httptools", "uvloop")}
HYPERCORN = ("hypercorn-asyncio", "hypercorn-trio")
KINDS = (*UVICORN, *HYPERCORN)
#: Not one of KINDS (the suites parametrized over KINDS stay as they are): granian binds its own
#: socket (its CLI takes a host and port, ``granian/cli.py``), so :func:`running` finds it a free
#: port and waits for its worker to listen.
GRANIAN = "granian"
#: What granian's worker logs just before it binds (granian's src/asgi/serve.rs).
GRANIAN_READY = "Started worker-1"
GRANIAN_NOT_READY = "granian did not start listening within {timeout} s; its output:\n{output}"

APP = "tests.server_app:app"
#: A line above INFO, from any logger.
NOISY_LINE = re.compile(r"WARNING|ERROR|Traceback")
UNKNOWN = "unknown server kind {kind!r}; one of {kinds}"


@dataclass(frozen=True)
class Options:
    """What a test asks of its server beyond the kind; None keeps the server's default."""

    #: The listening socket's backlog; the server listens again with the same.
    backlog: int = 256
    #: uvicorn's ``timeout_keep_alive``, hypercorn's ``keep_alive_timeout`` (seconds).
    keep_alive: int | None = None
    #: uvicorn's HTTP protocol class (``module:Class``), instead of the kind's.
    http: str | None = None
    #: The soft limit on open files raised to the hard limit, in the test and in the server
    #: (for runs that open hundreds of connections at once).
    many_files: bool = False
    #: Every logger to stderr in one format (``tests.chaos.logs``), and no access log.
    common_log: bool = False


@dataclass
class Served:
    """A server running in a child process, as the test sees it."""

    kind: str
    port: int
    pid: int
    log: Path

    def connect(self, timeout: float = 20.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def get(self, path: str, **params: Any) -> Any:
        """The JSON of a GET of ``path``, on a connection of its own."""
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=30).json()

    def wait_for(self, rid: str, what: str, timeout: float = 15.0) -> dict[str, Any]:
        """The app's record of request ``rid`` once ``what`` happened, or after ``timeout``
        seconds (the long-poll of :mod:`tests.recording`)."""
        result: dict[str, Any] = self.get(f"/await/{rid}/{what}", timeout=timeout)
        return result

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def noisy(self, *allowed: str) -> list[str]:
        """The lines of the output above INFO, but for those that contain one of ``allowed``."""
        return [
            line
            for line in self.output().splitlines()
            if NOISY_LINE.search(line) and not any(text in line for text in allowed)
        ]

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM of the server process, in KiB, from /proc/PID/status."""
        values: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0])
        return values


@contextmanager
def running(
    kind: str,
    log: Path,
    target: str = APP,
    options: Options = Options(),
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """Run ``target`` under server ``kind`` in a child process, on a free port of 127.0.0.1.

    The server's stdout and stderr go to ``log``; ``env`` is added to its environment. Stopped
    with SIGTERM on exit (SIGKILL if it does not stop within 15 s).

    ``kind`` may also be :data:`GRANIAN`: granian binds a free port itself (``options`` but
    ``backlog`` do not apply), and this returns once it accepts connections.

    :raises ValueError: for an unknown kind.
    """
    if kind == GRANIAN:
        with _running_granian(log, target, env) as served:
            yield served
        return
    if kind not in KINDS:
        raise ValueError(UNKNOWN.format(kind=kind, kinds=KINDS))
    if options.many_files:
        raise_nofile()
    listener = listening(options.backlog)
    fd = listener.fileno()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.serve", kind, str(fd), target, _dumps(options)],
            pass_fds=[fd],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=None if env is None else {**os.environ, **env},
        )
    try:
        yield Served(kind, listener.getsockname()[1], process.pid, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server is a failure too
            process.kill()
            process.wait(timeout=15)
        listener.close()


@contextmanager
def _running_granian(log: Path, target: str, env: dict[str, str] | None) -> Iterator[Served]:
    port = free_port()
    command = [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--log-level", "info"),
        *("--host", "127.0.0.1", "--port", str(port), target),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        # Its own process group: its worker process is stopped with it.
        start_new_session=True,
    )
    ready = threading.Event()

    def copy_output() -> None:
        assert process.stdout is not None
        with process.stdout as output, log.open("w") as out:
            for raw in output:
                line = raw.decode(errors="replace")
                out.write(line)
                out.flush()
                if GRANIAN_READY in line:
                    ready.set()

    copier = threading.Thread(target=copy_output, name="granian-output", daemon=True)
    copier.start()
    served = Served(GRANIAN, port, process.pid, log)
    try:
        _wait_accepting(served, ready, process)
        yield served
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server is a failure too
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        copier.join(timeout=15)


def _wait_accepting(
    served: Served, ready: threading.Event, process: subprocess.Popen[bytes]
) -> None:
    # The worker logs its start just before it binds: retry a refused connection, within the
    # same bound, once that line came.
    timeout = 30.0
    deadline = time.monotonic() + timeout
    if ready.wait(timeout):
        while time.monotonic() < deadline and process.poll() is None:
            try:
                served.connect(timeout=timeout).close()
                return
            except ConnectionRefusedError:
                continue
    raise RuntimeError(GRANIAN_NOT_READY.format(timeout=timeout, output=served.output()))


def listening(backlog: int = 256) -> socket.socket:
    """A socket bound to a free port of 127.0.0.1, listening, that a child process can inherit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    listener.set_inheritable(True)
    return listener


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago, for a server that binds its own (granian
    accepts no socket): another process could take it first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def assert_one_quiet_line(served: Served, path: str, result: dict[str, Any]) -> None:
    """The GET of ``path`` logged its one quiet 499 line: in the app's record, and once in the
    server's output."""
    pattern = rf"^GET {re.escape(path)}: 499 Client Closed Request after \d+\.\d{{3}} s$"
    assert len(result["log_lines"]) == 1, result
    assert re.match(pattern, result["log_lines"][0]), result
    assert served.output().count(f"{path}: 499 Client Closed Request") == 1


def raise_nofile() -> None:
    """Raise the soft limit on open files to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _dumps(options: Options) -> str:
    return json.dumps(dataclasses.asdict(options))


# -- in the child process ------------------------------------------------------------------------


def load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run_uvicorn(kind: str, fd: int, target: str, options: Options) -> None:
    import uvicorn

    http, loop = UVICORN[kind]
    settings: dict[str, Any] = {}
    if options.keep_alive is not None:
        settings["timeout_keep_alive"] = options.keep_alive
    if options.common_log:
        settings.update(log_config=None, access_log=False)
    config = uvicorn.Config(
        target,
        http=options.http or http,
        loop=loop,
        log_level="info",
        backlog=options.backlog,
        **settings,
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def run_hypercorn(kind: str, fd: int, target: str, options: Options) -> None:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{fd}"]
    config.loglevel = "INFO"
    config.backlog = options.backlog
    if options.keep_alive is not None:
        config.keep_alive_timeout = options.keep_alive
    if options.common_log:
        # A Logger, not "-": hypercorn then adds no handler of its own, and the lines reach the
        # root handler in the common format.
        config.errorlog = logging.getLogger("hypercorn.error")
        config.accesslog = None
    app = load(target)
    if kind == "hypercorn-asyncio":
        from hypercorn.asyncio import serve as serve_asyncio

        asyncio.run(serve_asyncio(app, config))
    else:
        import trio
        from hypercorn.trio import serve as serve_trio

        trio.run(serve_trio, app, config)


def main(kind: str, fd: int, target: str = APP, options: str = "{}") -> None:
    settings = Options(**json.loads(options))
    if settings.many_files:
        raise_nofile()
    if settings.common_log:
        from tests.chaos.logs import configure_logging

        configure_logging()
    if kind in UVICORN:
        run_uvicorn(kind, fd, target, settings)
    elif kind in HYPERCORN:
        run_hypercorn(kind, fd, target, settings)
    else:
        raise SystemExit(UNKNOWN.format(kind=kind, kinds=KINDS))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
