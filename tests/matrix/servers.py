"""The columns of the matrix: one server configuration each, started for real on 127.0.0.1.

Servers that can take a listening socket get one the test bound itself (port known up front,
connections queue in the backlog: no readiness wait). granian cannot (its CLI binds a host and
port or a UNIX socket, ``granian/cli.py``), so it gets a free port found by binding port 0, and
the test waits for its ``Listening at`` log line: an event, read from its output as it comes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from tests import ROOT
from tests.matrix.events import EVENTS_ENV
from tests.matrix.launch import APP, GRACEFUL_TIMEOUT
from tests.serve import free_port, listening

#: A line a server logs that the matrix treats as an error, unless the column expects it.
ERROR_LINE = re.compile(r"ERROR|CRITICAL|Traceback")

NOT_READY = "{column} did not start listening within {timeout} s; its output:\n{output}"
#: What granian logs once its worker listens (the main process binds nothing on Linux: each
#: worker binds its own SO_REUSEPORT socket, granian/server/common.py _init_shared_socket).
READY_LINE = "Started worker-1"
STOP_TIMEOUT = 20.0
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Column:
    """One server configuration.

    :ivar name: the column id in records and on the page.
    :ivar title: how the page names it.
    :ivar http: the protocol the clients speak to it (``h2`` is HTTP/2 prior knowledge, h2c).
    :ivar packages: the server stack, whose versions are recorded.
    :ivar settings: what the page says about how it was run.
    :ivar known_log: what the server is known to log at ERROR (or as a traceback) in these
        scenarios: a regex of the whole block, and why.
    """

    name: str
    title: str
    http: Literal["h1", "h2"]
    packages: tuple[str, ...]
    settings: str
    known_log: tuple[KnownLog, ...] = field(default=())

    @property
    def class_name(self) -> str:
        """The name of its test class: ``uvicorn-h11`` is ``TestUvicornH11``."""
        return "Test" + "".join(part.capitalize() for part in self.name.split("-"))

    def versions(self) -> dict[str, str]:
        return {package: importlib.metadata.version(package) for package in self.packages}

    def unexpected_log(self, output: str) -> list[str]:
        """The error lines of ``output`` outside the blocks that ``known_log`` explains."""
        for known in self.known_log:
            output = re.sub(known.pattern, "", output, flags=re.MULTILINE)
        return [line for line in output.splitlines() if ERROR_LINE.search(line)]


@dataclass(frozen=True)
class KnownLog:
    pattern: str
    why: str


UVLOOP_CLOSED_TRANSPORT = KnownLog(
    r"^.*ERROR.*Exception in ASGI application\nTraceback \(most recent call last\):\n"
    r"(?:  .*\n)+RuntimeError: unable to perform operation on <TCPTransport closed=True.*\n",
    "`pipelined`: the queued request runs after its client left, and its response is written "
    "to a closed uvloop transport, which raises (`uvicorn/protocols/http/httptools_impl.py`, "
    "`HttpToolsProtocol.on_response_complete` starts it; `RequestResponseCycle.send` writes).",
)
ASYNCIO_CANCELLED_CONNECTION = KnownLog(
    r"^Exception in callback StreamReaderProtocol\.connection_made\.<locals>\.callback\(.*\n"
    r"(?:handle: .*\n)?Traceback \(most recent call last\):\n(?:(?:  .*|\S.*Error|"
    r"During handling.*|The above exception.*|)\n)*?asyncio\.exceptions\.CancelledError\n",
    "At shutdown hypercorn cancels the connections still open (the one whose FIN it never "
    "read, `unread_body`; HTTP/2 connections), and Python 3.11's asyncio logs each "
    "cancellation (`asyncio/streams.py`, the `StreamReaderProtocol.connection_made` callback "
    "calls `task.exception()` on a cancelled task).",
)

COLUMNS = (
    Column("uvicorn-h11", "uvicorn h11", "h1", ("uvicorn", "h11"), "--http h11 --loop asyncio"),
    Column(
        "uvicorn-httptools",
        "uvicorn httptools",
        "h1",
        ("uvicorn", "httptools"),
        "--http httptools --loop asyncio",
    ),
    Column(
        "uvicorn-httptools-uvloop",
        "uvicorn httptools + uvloop",
        "h1",
        ("uvicorn", "httptools", "uvloop"),
        "--http httptools --loop uvloop",
        (UVLOOP_CLOSED_TRANSPORT,),
    ),
    Column(
        "uvicorn-h2c",
        "uvicorn HTTP/2 (h2c)",
        "h2",
        ("uvicorn", "zttp"),
        "--http zttp --http2 --loop asyncio, HTTP/2 prior knowledge",
    ),
    Column(
        "hypercorn-asyncio",
        "hypercorn asyncio",
        "h1",
        ("hypercorn", "h11"),
        "asyncio worker, HTTP/1.1",
        (ASYNCIO_CANCELLED_CONNECTION,),
    ),
    Column(
        "hypercorn-trio",
        "hypercorn trio",
        "h1",
        ("hypercorn", "h11", "trio"),
        "trio worker, HTTP/1.1",
    ),
    Column(
        "hypercorn-asyncio-h2c",
        "hypercorn asyncio h2c",
        "h2",
        ("hypercorn", "h2"),
        "asyncio worker, HTTP/2 prior knowledge",
        (ASYNCIO_CANCELLED_CONNECTION,),
    ),
    Column(
        "hypercorn-trio-h2c",
        "hypercorn trio h2c",
        "h2",
        ("hypercorn", "h2", "trio"),
        "trio worker, HTTP/2 prior knowledge",
    ),
    Column("granian", "granian", "h1", ("granian",), "--interface asgi --http 1"),
    Column(
        "granian-h2c",
        "granian h2c",
        "h2",
        ("granian",),
        "--interface asgi --http 2, HTTP/2 prior knowledge",
    ),
    Column("daphne", "daphne", "h1", ("daphne", "twisted"), "defaults"),
    Column(
        "gunicorn-uvicorn",
        "gunicorn + uvicorn workers",
        "h1",
        ("gunicorn", "uvicorn-worker", "uvicorn", "httptools", "uvloop"),
        "-k uvicorn_worker.UvicornWorker -w 2",
        (UVLOOP_CLOSED_TRANSPORT,),
    ),
)
BY_NAME = {column.name: column for column in COLUMNS}


def _command(column: str, fd: int, port: int) -> list[str]:
    python = sys.executable
    if column.startswith(("uvicorn-", "hypercorn-")):
        return [python, "-m", "tests.matrix.launch", column, str(fd)]
    if column.startswith("granian"):
        http = "2" if column.endswith("-h2c") else "1"
        return [
            *(python, "-m", "granian", "--interface", "asgi", "--http", http),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "info"),
            *("--workers-kill-timeout", str(GRACEFUL_TIMEOUT), APP),
        ]
    if column == "daphne":
        return [python, "-m", "daphne", "--fd", str(fd), APP]
    if column == "gunicorn-uvicorn":
        return [
            *(python, "-m", "gunicorn", "--bind", f"fd://{fd}", "--workers", "2"),
            *("--worker-class", "uvicorn_worker.UvicornWorker"),
            *("--graceful-timeout", str(GRACEFUL_TIMEOUT), "--log-level", "info", APP),
        ]
    raise ValueError(f"no command for column {column!r}")


class Server:
    """One server process serving the matrix app; a context manager that stops it."""

    def __init__(self, column: Column, directory: Path, events: Path) -> None:
        self.column = column
        self.log = directory / f"{column.name}-{os.urandom(3).hex()}.log"
        self._listener: socket.socket | None = None
        if column.name.startswith("granian"):
            self.port = free_port()  # granian binds its own socket
            fd = -1
        else:
            listener = self._listener = listening()
            self.port = listener.getsockname()[1]
            fd = listener.fileno()
        env = {**os.environ, EVENTS_ENV: str(events), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            _command(column.name, fd, self.port),
            pass_fds=[fd] if fd >= 0 else [],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            # Its own process group: worker processes are stopped with it (see stop()).
            start_new_session=True,
        )
        self._ready = threading.Event()
        self._lines: list[str] = []
        self._copier = threading.Thread(target=self._copy_output, daemon=True)
        self._copier.start()
        if self._listener is None:
            self._wait_listening()

    def _wait_listening(self) -> None:
        # The worker logs its start just before it binds (granian's src/asgi/serve.rs):
        # retry the connection while it is refused, within the same bound.
        deadline = time.monotonic() + READY_TIMEOUT
        if self._ready.wait(READY_TIMEOUT):
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    self.connect(timeout=READY_TIMEOUT).close()
                    return
                except ConnectionRefusedError:
                    continue
        self.stop()
        raise RuntimeError(
            NOT_READY.format(column=self.column.name, timeout=READY_TIMEOUT, output=self.output())
        )

    def _copy_output(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as output, self.log.open("w") as out:
            for raw in output:
                line = raw.decode(errors="replace")
                out.write(line)
                out.flush()
                self._lines.append(line)
                if READY_LINE in line:
                    self._ready.set()

    def connect(self, timeout: float = 20.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def output(self) -> str:
        return "".join(self._lines)

    def terminate(self) -> None:
        """Ask the server to stop gracefully (SIGTERM), as a process manager would."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop the server; its exit status, or None if it did not exit within ``timeout``
        seconds and was killed."""
        if self.process.poll() is None:
            self.terminate()
        try:
            status: int | None = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        # Whatever is left of the server (its workers, if the main process was stuck or left
        # them behind) is in the process group this server started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        self._copier.join(timeout=STOP_TIMEOUT)
        if self._listener is not None:
            self._listener.close()
        return status

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
