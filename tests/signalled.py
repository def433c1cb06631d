"""A server process started to be told to stop, and raw HTTP/1.1 clients of it.

Shared by the shutdown tests (what each server does with requests in flight when it stops) and
the stopping tests (streams that end at SIGTERM): :class:`Server` starts a command line on a
listening socket the test bound itself (granian binds its own port, so its first connection is
retried, bounded) and copies its output as it comes; :class:`Client` sends one GET on its own
connection and reads the response to its end in a thread.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests import ROOT
from tests.events import Collector
from tests.raw_http import request_bytes
from tests.serve import free_port, listening
from tests.support import missing

#: Seconds to wait for anything that should happen (a start, an event, an exit).
BOUND = 20.0

NOT_INSTALLED = "{kind} needs {missing}, which is not installed"
NOT_STOPPED = "{kind} did not exit within {timeout} s of the signal; its output:\n{output}"
NO_DATA = "the client did not receive {expected!r} within {timeout} s; it got {data!r}"


def require(kind: str, modules: Iterable[str]) -> None:
    """Skip (fail under CI) unless every module ``kind`` needs is installed."""
    absent = [name for name in modules if importlib.util.find_spec(name) is None]
    if absent:
        missing(NOT_INSTALLED.format(kind=kind, missing=", ".join(absent)), "the server tests")


@contextmanager
def collected_events(prefix: str) -> Iterator[Collector]:
    """A :class:`~tests.events.Collector` in a temporary directory, closed and removed after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        events = Collector(Path(directory))
        try:
            yield events
        finally:
            events.close()


class Client:
    """One raw HTTP/1.1 GET on its own connection, read to the end in a thread."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
        self.data = b""
        #: When the server closed the connection (``time.monotonic_ns()``), or None.
        self.closed_ns: int | None = None
        self._received = threading.Condition()
        self.sock.sendall(request_bytes(path))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except OSError:  # our own timeout: the server left the connection open
                return
            with self._received:
                if not chunk:
                    self.closed_ns = time.monotonic_ns()
                self.data += chunk
                self._received.notify_all()
            if not chunk:
                return

    def wait_for(self, expected: bytes) -> None:
        with self._received:
            if not self._received.wait_for(lambda: expected in self.data, BOUND):
                raise TimeoutError(NO_DATA.format(expected=expected, timeout=BOUND, data=self.data))

    def finish(self) -> None:
        """Wait (bounded) until the server closes the connection, then close ours."""
        self._thread.join(timeout=BOUND)
        self.sock.close()

    @property
    def status(self) -> int | None:
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", self.data)
        return int(match.group(1)) if match else None

    @property
    def complete(self) -> bool:
        """Whether a whole response came: a Content-Length body, or a chunked one's last chunk."""
        head, _, body = self.data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
        if length is not None:
            return len(body) == int(length.group(1))
        return body.endswith(b"0\r\n\r\n")


@contextmanager
def _listener(kind: str) -> Iterator[tuple[int, int]]:
    if kind == "granian":  # binds its own socket
        yield -1, free_port()
        return
    listener = listening(64)
    try:
        yield listener.fileno(), listener.getsockname()[1]
    finally:
        listener.close()


def _await_listening(port: int) -> None:
    # granian's worker listens only after its lifespan startup and after it logs "Started
    # worker" (src/workers.rs): a few ms that no event marks. A refused connection is retried
    # (bounded), without sleeping.
    deadline = time.monotonic() + BOUND
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=BOUND).close()
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise


class Server:
    """One server process, its output copied as it comes.

    :param command: the command line, given the inherited socket's descriptor (-1 for granian)
        and the port.
    :param env: added to this process's environment.
    """

    def __init__(
        self, kind: str, command: Callable[[int, int], list[str]], env: dict[str, str]
    ) -> None:
        self.kind = kind
        self.lines: list[str] = []
        self.logged = threading.Condition()
        with _listener(kind) as (fd, self.port):
            self.process = subprocess.Popen(
                command(fd, self.port),
                pass_fds=[fd] if fd >= 0 else [],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            )
        self._copier = threading.Thread(target=self._copy, daemon=True)
        self._copier.start()
        if kind == "granian":
            _await_listening(self.port)

    def _copy(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self.logged:
                self.lines.append(raw.decode(errors="replace"))
                self.logged.notify_all()

    def output(self) -> str:
        with self.logged:
            return "".join(self.lines)

    def wait_logged(self, text: str) -> None:
        with self.logged:
            assert self.logged.wait_for(lambda: text in "".join(self.lines), BOUND), self.lines

    def wait_exit(self) -> int:
        """The exit code, once the process exited (bounded: else killed, and a failure)."""
        try:
            returncode = self.process.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                NOT_STOPPED.format(kind=self.kind, timeout=BOUND, output=self.output())
            ) from None
        self._copier.join(timeout=BOUND)
        return returncode

    def kill(self) -> None:
        """Kill the process if it still runs, and release its pipe."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=BOUND)
        self._copier.join(timeout=BOUND)
        assert self.process.stdout is not None
        self.process.stdout.close()
