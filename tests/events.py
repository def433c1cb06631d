"""What an app under test tells the test, out of band, over a UNIX datagram socket.

The app runs in another process (or several: the workers of gunicorn and granian), so it reports
what happens to each request as one JSON datagram per event, stamped with ``time.monotonic_ns()``
(CLOCK_MONOTONIC: one clock for every process on the machine) and the pid of the process that
served the request. A datagram reaches the test whatever the state of the server, shutting down
included, from any worker process and from any thread. The test waits for an event with a bound
(a condition variable), never by sleeping.

Datagrams from one sending socket arrive in the order they were sent, so a request's ``tripped``
arrives before the ``finished`` sent after it by the same thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

NO_EVENT = "no {what!r} event for request {rid} within {timeout} s; events so far: {events}"

Event = dict[str, Any]


class Emitter:
    """The app's end: sends to the socket named by the environment variable ``env``.

    One socket per process, made on first use: servers fork their workers after the import.
    """

    def __init__(self, env: str) -> None:
        self.env = env
        self._pid = -1
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def __call__(self, rid: str, what: str, **fields: Any) -> None:
        """Report event ``what`` of request ``rid``, stamped now. Any thread; a no-op when the
        environment variable is not set."""
        path = os.environ.get(self.env)
        if path is None:
            return
        event = {"rid": rid, "what": what, "t_ns": time.monotonic_ns(), "pid": os.getpid()}
        payload = json.dumps({**event, **fields}).encode()
        with self._lock:
            if self._sock is None or self._pid != os.getpid():
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._pid = os.getpid()
            self._sock.sendto(payload, path)


class Collector:
    """The test's end: receives every event in a thread, and waits for one with a bound."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "events.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._events: dict[str, list[Event]] = defaultdict(list)
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._receive, name="events", daemon=True)
        self._thread.start()

    def post(self, rid: str, what: str) -> None:
        """Add an event from the test's side (say, "the server process exited")."""
        self._add({"rid": rid, "what": what, "t_ns": time.monotonic_ns(), "pid": os.getpid()})

    def _add(self, event: Event) -> None:
        with self._changed:
            self._events[event["rid"]].append(event)
            self._changed.notify_all()

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:  # closed by close()
                return
            if not data:
                return
            self._add(json.loads(data))

    def get(self, rid: str, what: str) -> Event | None:
        """The first ``what`` event of ``rid`` received so far, if any."""
        with self._changed:
            return self._find(rid, what)

    def events(self, rid: str) -> list[Event]:
        with self._changed:
            return list(self._events[rid])

    def wait(self, rid: str, what: str | tuple[str, ...], timeout: float) -> Event:
        """The first ``what`` event of ``rid`` (or the first of several kinds), waiting up to
        ``timeout`` seconds.

        :raises TimeoutError: if it did not come in time.
        """
        with self._changed:
            found = self._changed.wait_for(lambda: self._find(rid, what), timeout)
            if not found:
                raise TimeoutError(
                    NO_EVENT.format(what=what, rid=rid, timeout=timeout, events=self._events[rid])
                )
            return found

    def _find(self, rid: str, what: str | tuple[str, ...]) -> Event | None:
        kinds = (what,) if isinstance(what, str) else what
        return next((e for e in self._events[rid] if e["what"] in kinds), None)

    def pids(self) -> set[int]:
        """Every process that reported an event."""
        with self._changed:
            return {e["pid"] for events in self._events.values() for e in events}

    def close(self) -> None:
        # shutdown() wakes the thread blocked in recv(); close() alone would not.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
