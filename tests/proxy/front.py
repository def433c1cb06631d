"""What every proxy runner shares: a column, the proxy's log lines as they come, start and stop.

A proxy module (``haproxy.py``, ``apache.py``, ``caddy.py``) writes its config into a tmp dir and
calls :func:`run`, which starts the proxy in the foreground on a free port of 127.0.0.1, probes
it with one request through to the upstream (bounded), and stops it on exit. Its log lines reach
a :class:`LogFeed`, as syslog datagrams on 127.0.0.1 (HAProxy, and Apache through
``tests.proxy.forward``) or as lines of its stderr (Caddy), each turned by the proxy module into
one common shape, ``status=N ... "METHOD /path HTTP/1.1" ...``, so that a test waits for the line
of its request as an event, with a bound, and reads its status the same way for every proxy.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.matrix.clients import H2Client
from tests.proxy.tls import Certificate
from tests.raw_http import HOST

LINE_MISSING = "{proxy} logged no line containing {text!r} within {timeout} s; it logged:\n{lines}"
PROXY_DIED = "{proxy} exited with code {code} at start; its output:\n{output}"
PROXY_NOT_READY = "{proxy} did not answer a request within {timeout} s; its output:\n{output}"
MISSING = "{proxy} is not installed: the proxy tests need Debian's {package} ({binary})"

#: What a test waits at most for one log line, and for a proxy to start.
LOG_TIMEOUT = 15.0
START_TIMEOUT = 30.0
#: The access line of a request, in the common shape: its status (``-`` for none, as Varnish
#: logs a piped request), then its request line.
STATUS = re.compile(r"status=(-?\d+|-)")
#: The client connection a request came on, in an HTTP/2 column's access line: nginx's
#: ``$connection``, h2o's ``%{connection-id}x``, Caddy's client address and port.
CONNECTION = re.compile(r" connection=([^/\s]+)")


@dataclass(frozen=True)
class Column:
    """One proxy configuration: a column of the "Behind a proxy" table."""

    #: ``haproxy-server-close``: the file name of its records, and its id in test names.
    name: str
    #: Which proxy (``haproxy``), for the page's grouping.
    proxy: str
    #: The settings that make this column, as the page shows them (config lines).
    settings: tuple[str, ...]
    #: The proxy's own timeout for the upstream's response, in seconds (its timeout row).
    timeout: float = 3.0
    #: TLS with a self-signed certificate and HTTP/2 to the client (ALPN ``h2``), HTTP/1.1 to
    #: the upstream, as browsers reach a site: the HTTP/2 rows apply.
    http2: bool = False

    @property
    def protocol(self) -> str:
        """The client's protocol in the access line's request line, in the common shape."""
        return "HTTP/2.0" if self.http2 else "HTTP/1.1"


class LogFeed:
    """A proxy's log lines, received on threads as they come: UDP datagrams on 127.0.0.1
    (``port``) and any stream given to :meth:`follow`, each line passed through ``shape``."""

    def __init__(self, proxy: str, shape: Callable[[str], str] = lambda line: line) -> None:
        self.proxy = proxy
        self._shape = shape
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._receive, daemon=True)]
        self._threads[0].start()

    def add(self, line: str) -> None:
        with self._changed:
            self._lines.append(self._shape(line.rstrip("\n")))
            self._changed.notify_all()

    def _receive(self) -> None:
        while True:
            data = self._socket.recv(65536)
            if not data:
                # The empty datagram close() sends: every line sent came before it.
                return
            self.add(data.decode("utf-8", "replace"))

    def follow(self, stream: IO[bytes]) -> None:
        """Add each line of ``stream`` (a child's stderr), until it ends."""

        def read() -> None:
            for raw in stream:
                self.add(raw.decode("utf-8", "replace"))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        self._threads.append(thread)

    def lines(self, text: str = "") -> list[str]:
        with self._changed:
            return [line for line in self._lines if text in line]

    def wait_for(
        self, text: str, timeout: float = LOG_TIMEOUT, where: Callable[[str], bool] | None = None
    ) -> str:
        """The first line containing ``text`` (and accepted by ``where``), once the proxy sent it.

        :raises AssertionError: if none came within ``timeout`` seconds.
        """

        def found() -> str | None:
            lines = (line for line in self._lines if text in line)
            return next((line for line in lines if where is None or where(line)), None)

        with self._changed:
            line = self._changed.wait_for(found, timeout)
            if line is None:
                lines = "\n".join(self._lines)
                raise AssertionError(
                    LINE_MISSING.format(proxy=self.proxy, text=text, timeout=timeout, lines=lines)
                )
            return line

    def close(self) -> None:
        """Stop once every line sent so far is received (call once the proxy has exited)."""
        self._socket.sendto(b"", ("127.0.0.1", self.port))
        for thread in self._threads:
            thread.join(timeout=10)
        self._socket.close()


@dataclass
class Front:
    """A running proxy: its column, where it listens, its log lines."""

    column: Column
    port: int
    directory: Path
    feed: LogFeed
    process: subprocess.Popen[bytes]
    #: The certificate the proxy serves, for an HTTP/2 column.
    certificate: Certificate | None = None

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)

    def h2(self) -> H2Client:
        """A new HTTP/2 connection over TLS to the proxy (an HTTP/2 column)."""
        assert self.certificate is not None, self.column
        return H2Client(self.port, tls=self.certificate.client_context())

    def access(self, path: str, method: str = "GET") -> tuple[int, str]:
        """The status and the whole access line of the request to ``path``, once logged."""
        request = f'"{method} {path} {self.column.protocol}"'
        line = self.feed.wait_for(request, where=lambda line: STATUS.search(line) is not None)
        match = STATUS.search(line)
        assert match is not None, line
        return (-1 if match.group(1) == "-" else int(match.group(1))), line

    def connection_of(self, path: str) -> str:
        """The client connection the request to ``path`` came on, as the proxy logged it."""
        line = self.access(path)[1]
        match = CONNECTION.search(line)
        assert match is not None, line
        return match.group(1)


def probe(
    port: int,
    process: subprocess.Popen[bytes],
    output: Callable[[], str],
    tls: ssl.SSLContext | None = None,
) -> None:
    """One request through the proxy to the upstream's /ping, within :data:`START_TIMEOUT`
    (HTTP/1.1, over TLS when given ``tls``).

    A refused connection (the proxy has not bound yet) or a 5xx (it has not reached the
    upstream yet) is tried again within the bound; each try waits on the socket, never a sleep.
    """
    proxy = Path(str(process.args[0])).name  # type: ignore[index]
    deadline = time.monotonic() + START_TIMEOUT
    data = b""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                PROXY_DIED.format(proxy=proxy, code=process.returncode, output=output())
            )
        try:
            plain = socket.create_connection(("127.0.0.1", port), timeout=2)
            with plain if tls is None else tls.wrap_socket(plain, server_hostname=HOST) as probe:
                probe.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := probe.recv(65536):
                    data += chunk
        except (ConnectionRefusedError, ConnectionResetError, TimeoutError, ssl.SSLEOFError):
            # Not listening yet (a refusal is immediate), or not through to the upstream yet.
            continue
        if data.startswith(b"HTTP/1.1 200 "):
            return
    raise RuntimeError(
        PROXY_NOT_READY.format(proxy=proxy, timeout=START_TIMEOUT, output=output() + repr(data))
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, each with a bound."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung proxy fails the test
            continue


@contextmanager
def run(
    column: Column,
    argv: Sequence[str],
    directory: Path,
    port: int,
    feed: LogFeed,
    *,
    follow_stderr: bool = False,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str | Path] | None = None,
    certificate: Certificate | None = None,
) -> Iterator[Front]:
    """Run ``argv`` (a proxy in the foreground, configured to listen on ``port``) until exit.

    Its stderr goes to ``directory/stderr.log``, or to ``feed`` when ``follow_stderr``.
    """
    log = directory / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if follow_stderr else err,
            cwd=directory,
            env={**os.environ, **{name: str(value) for name, value in (env or {}).items()}},
            pass_fds=list(pass_fds),
        )
    if follow_stderr:
        assert process.stderr is not None
        feed.follow(process.stderr)

    def output() -> str:
        return "\n".join(feed.lines()) + log.read_text(errors="replace")

    try:
        tls = None if certificate is None else certificate.client_context(("http/1.1",))
        probe(port, process, output, tls)
        yield Front(column, port, directory, feed, process, certificate)
    finally:
        stop(process)
        feed.close()
        if process.stderr is not None:
            process.stderr.close()
