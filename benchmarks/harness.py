"""Starting servers, talking to them, holding connections open, and summing up numbers."""

from __future__ import annotations

import http.client
import json
import math
import socket
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from benchmarks.system import cpu_seconds, rss_bytes

ROOT = Path(__file__).resolve().parent.parent
#: Bound on every server-side wait the driver asks for, in seconds.
WAIT = 30.0
#: Connections opened at once before waiting for the server to have accepted them all.
BATCH = 500


class ServerError(RuntimeError):
    pass


class Server:
    """One uvicorn process serving one variant, on a port the driver bound itself."""

    def __init__(self, variant: str, log: Path) -> None:
        self.variant = variant
        self.log = log
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4096)
        self._listener.set_inheritable(True)
        self.port: int = self._listener.getsockname()[1]
        fd = self._listener.fileno()
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.serve", variant, str(fd)],
                pass_fds=[fd],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self._control: http.client.HTTPConnection | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def get(self, path: str, **params: float) -> Any:
        """GET a control route over one keep-alive connection; return the decoded JSON.

        The answer is awaited for twice the server-side ``wait`` parameter (or :data:`WAIT`)."""
        timeout = 2 * params.get("wait", WAIT)
        if params:
            path += "?" + urlencode(params)
        for attempt in (1, 2):
            if self._control is None:
                self._control = http.client.HTTPConnection("127.0.0.1", self.port)
                self._control.connect()
            assert self._control.sock is not None
            self._control.sock.settimeout(timeout)
            try:
                self._control.request("GET", path)
                response = self._control.getresponse()
                body = response.read()
            except (ConnectionError, http.client.HTTPException):
                self._control.close()
                self._control = None
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise ServerError(f"{self.variant} {path}: {response.status} {body!r}")
            return json.loads(body)
        raise AssertionError("unreachable")  # pragma: no cover

    def ready(self) -> None:
        """Return once the server answers: the first request waits in the listener's backlog
        until uvicorn has imported the app and accepts (a measurement started before that
        would count the import time as the server's, or see no response at all)."""
        self.get("/_bench/count/ready")

    def wait_count(
        self, name: str, at_least: int = 0, at_most: int = 1 << 30, wait: float = WAIT
    ) -> int:
        """Wait (at most ``wait`` seconds, on the server) until the counter ``name`` is in the
        given range."""
        path = f"/_bench/count/{name}"
        result = self.get(path, at_least=at_least, at_most=at_most, wait=wait)
        if not result["met"]:
            raise ServerError(
                f"{self.variant}: {name} = {result['count']}, wanted {at_least}..{at_most} "
                f"within {wait} s; see {self.log}"
            )
        count: int = result["count"]
        return count

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            self._listener.close()


@contextmanager
def servers(log_dir: Path, *variants: str) -> Iterator[list[Server]]:
    """Start one server per variant; stop them all on the way out, whatever happens."""
    started: list[Server] = []
    with ExitStack() as stack:
        for variant in variants:
            server = Server(variant, log_dir / f"server-{variant}-{len(started)}.log")
            stack.callback(server.stop)
            started.append(server)
        for server in started:
            server.ready()
        yield started


def request_bytes(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def open_request(server: Server, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    sock.sendall(request_bytes(path))
    return sock


class Held:
    """Requests to ``/hold`` whose sockets stay open: ``grow()`` to a level, ``close()`` all."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sockets: list[socket.socket] = []

    def grow(self, level: int) -> None:
        while len(self.sockets) < level:
            for _ in range(min(BATCH, level - len(self.sockets))):
                self.sockets.append(open_request(self.server, "/hold"))
            self.server.wait_count("held", at_least=len(self.sockets))

    def close(self) -> None:
        self.server.get("/_bench/release")
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        self.server.wait_count("held", at_most=0)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` from 0 to 100."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of a few rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }
