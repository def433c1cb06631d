"""Two network namespaces joined by a veth pair, a server in one and clients in the other.

Everything lives inside namespaces this module creates (named after the test process's pid)
and deletes: their addresses (:data:`SERVER_ADDRESS`, :data:`CLIENT_ADDRESS`) exist nowhere
else, and no packet leaves them. A client's network "vanishes" when nftables, in the client's
namespace, drops every packet of that one connection both ways (:meth:`Link.cut`): no FIN, no
RST, no ICMP reaches the server, and ARP still answers, as when a laptop's lid closes behind a
router. Needs root, iproute2's ``ip`` and Debian's ``nftables``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests import EXAMPLES, ROOT

SERVER_ADDRESS = "10.251.0.1"
CLIENT_ADDRESS = "10.251.0.2"
#: The namespace is new, so any port is free in it.
PORT = 8000
#: What a child process may take at most to print its first line.
START_TIMEOUT = 30.0

MISSING = (
    "the network tests need root, iproute2's ip and nftables' nft (apt-get install iproute2 "
    "nftables), and a kernel with network namespaces: {why}"
)
NO_TEXT = "{what} printed no line with {text!r} within {timeout} s; it printed:\n{lines}"
NO_LINE = "{what} printed no line within {timeout} s; its output:\n{output}"
_names = itertools.count()


def unavailable() -> str | None:
    """Why the namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return MISSING.format(why="not root")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return MISSING.format(why=f"{tool} is not installed")
    name = f"fa-probe-{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return MISSING.format(why=probe.stderr.strip())
    subprocess.run(["ip", "netns", "del", name], check=True)
    return None


def run(*command: str, stdin: str | None = None) -> None:
    subprocess.run(command, input=stdin, text=True, check=True, capture_output=True)


@dataclass
class Child:
    """A process in a namespace whose stdout the test reads line by line, with a bound."""

    what: str
    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, name=self.what, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, output: Path) -> str:
        try:
            return self.lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            text = output.read_text(errors="replace") if output.exists() else ""
            raise RuntimeError(
                NO_LINE.format(what=self.what, timeout=START_TIMEOUT, output=text)
            ) from None

    def wait_for(self, text: str, timeout: float) -> str:
        """The first line from now on that contains ``text``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
            seen.append(line)
        lines = "\n".join(seen)
        raise TimeoutError(NO_TEXT.format(what=self.what, text=text, timeout=timeout, lines=lines))

    def stop(self) -> None:
        """End the process and its children (gunicorn's workers): its own process group."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung child is a failure too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        # Its workers may outlive it a moment: end the group before the pipe is closed (a
        # close would wait for the reader thread, which reads until every writer is gone).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Link:
    """The two namespaces of one test, and the processes it started in them."""

    server_ns: str
    client_ns: str
    directory: Path
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def start(self, namespace: str, what: str, *args: str, log: Path | None) -> Child:
        """Run ``python ARGS`` in ``namespace``; its stderr goes to ``log``, or with its stdout
        to the test when ``log`` is None."""
        with open(os.devnull if log is None else log, "w") as err:
            process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, sys.executable, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if log is None else err,
                text=True,
                cwd=ROOT,
                start_new_session=True,  # a group of its own, ended whole by stop()
                # The documented examples import as top-level modules, as tests/test_docs.py does.
                env={**os.environ, **self.env, "PYTHONPATH": str(EXAMPLES)},
            )
        child = Child(what, process)
        self.children.append(child)
        return child

    def serve(self, kind: str, settings: str) -> Path:
        """Start ``tests.network.serve`` in the server namespace; return once it listens."""
        log = self.directory / "server.log"
        server = self.start(
            self.server_ns,
            "server",
            *("-m", "tests.network.serve", kind, SERVER_ADDRESS, str(PORT), settings),
            log=log,
        )
        server.line(log)
        return log

    def client(self, path: str) -> tuple[Child, int]:
        """A client in the client namespace with ``GET path`` under way, and its port."""
        log = self.directory / f"client-{len(self.children)}.log"
        client = self.start(
            self.client_ns,
            "client",
            *("-m", "tests.network.client", SERVER_ADDRESS, str(PORT), path),
            log=log,
        )
        return client, int(client.line(log))

    def cut(self, port: int) -> None:
        """Drop every packet of the client connection from ``port``, both ways."""
        rules = (
            f"table inet cut{port} {{\n"
            f"  chain in {{ type filter hook input priority 0; tcp dport {port} drop; }}\n"
            f"  chain out {{ type filter hook output priority 0; tcp sport {port} drop; }}\n"
            "}\n"
        )
        run("ip", "netns", "exec", self.client_ns, "nft", "-f", "-", stdin=rules)

    def restore(self, port: int) -> None:
        """Undo :meth:`cut`."""
        run("ip", "netns", "exec", self.client_ns, "nft", "delete", "table", "inet", f"cut{port}")


@contextmanager
def linked(directory: Path, env: dict[str, str]) -> Iterator[Link]:
    """Two fresh namespaces joined by a veth pair, deleted on exit with what ran in them."""
    n = next(_names)
    server_ns, client_ns = f"fa-srv-{os.getpid()}-{n}", f"fa-cli-{os.getpid()}-{n}"
    link = Link(server_ns, client_ns, directory, env)
    try:
        for namespace in (server_ns, client_ns):
            run("ip", "netns", "add", namespace)
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        run(*("ip", "-n", server_ns, "link", "add", "veth0", "type", "veth"),
            *("peer", "name", "veth0", "netns", client_ns))  # fmt: skip
        for namespace, address in ((server_ns, SERVER_ADDRESS), (client_ns, CLIENT_ADDRESS)):
            run("ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", "veth0")
            run("ip", "-n", namespace, "link", "set", "veth0", "up")
        yield link
    finally:
        for child in reversed(link.children):  # clients first: the server then stops at once
            child.stop()
        for namespace in (server_ns, client_ns):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
