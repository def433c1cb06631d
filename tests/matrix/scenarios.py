"""The rows of the matrix: each a way for a client to leave (or not), run against one server.

A scenario sends its request, waits until the endpoint holds (the ``started`` event), takes
``time.monotonic_ns()`` and leaves. The endpoint reports ``finished`` when its hold ends, early
if the token tripped; the detection delay is the ``tripped`` callback's timestamp minus the
client's. A token that has not tripped by the end of the hold (``tests.matrix.app.HOLD``
seconds after the client left) counts as "never".
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.events import Collector, Event
from tests.matrix.app import HOLD
from tests.matrix.clients import H2Client
from tests.matrix.servers import Column, Server
from tests.raw_http import How, leave, new_id, read_response, read_until, request_bytes

SCENARIOS = (
    "close_before_response",
    "rst",
    "half_close",
    "leave_mid_stream",
    "keepalive_complete",
    "upload_then_leave",
    "unread_body",
    "pipelined",
    "expect_continue",
    "graceful_shutdown",
    "def_endpoint",
    "base_http_middleware_inside",
    "base_http_middleware_outside",
    "is_disconnected_and_streaming",
    "h2_stream_reset",
)

#: Seconds to wait for an endpoint to start holding (a loaded machine is slow).
STARTED = 20.0
#: Seconds to wait for an endpoint to finish: its hold, and then some.
FINISHED = HOLD + 20.0
#: Seconds to wait for ``100 Continue`` before sending the body anyway (RFC 9110 10.1.1).
CONTINUE_WAIT = 3.0
#: Seconds an endpoint holds while its server is asked to stop (longer than the grace period).
SHUTDOWN_HOLD = 6.0
#: Seconds a server has to exit once the request in flight at its shutdown ended.
SHUTDOWN_EXIT = 5.0
UPLOAD = bytes(range(256)) * 4096  # 1 MiB, read whole by the endpoint
#: A body larger than what the kernel buffers of both ends can take, never read by the endpoint.
UNREAD = 16 * 1024 * 1024
#: Seconds without the server taking a byte of the body after which it has stopped reading it.
STALL = 1.0
DISCONNECTED = "client disconnected"


@dataclass(frozen=True)
class Observation:
    trips: bool
    delay_ms: float | None
    note: str = ""


@dataclass
class Cell:
    """What a scenario runs against: the column's server, and a way to start another one."""

    column: Column
    server: Server
    events: Collector
    start: Callable[[], Server]

    @property
    def h2(self) -> bool:
        return self.column.http == "h2"


def outcome(events: Collector, rid: str, t0: int, note: str = "") -> Observation:
    """How request ``rid`` ended, once it did: tripped (and how long after ``t0``), or not."""
    finished = events.wait(rid, "finished", FINISHED)
    return _observed(events, rid, finished, t0, note)


def _observed(events: Collector, rid: str, finished: Event, t0: int, note: str) -> Observation:
    if not finished["tripped"]:
        return Observation(False, None, note)
    # The callback may run after a worker thread reported "finished" (a def endpoint).
    tripped = events.wait(rid, "tripped", STARTED)
    reason = tripped["reason"]
    if reason != DISCONNECTED:
        note = f"{note}; reason: {reason}" if note else f"reason: {reason}"
    return Observation(True, (tripped["t_ns"] - t0) / 1e6, note)


def _held(
    cell: Cell,
    path: str,
    how: How = "close",
    method: str = "GET",
    body: bytes = b"",
    marker: bytes | None = None,
) -> tuple[str, int]:
    """Send a request to a holding endpoint, wait until it holds, leave; the id and t0."""
    rid = new_id()
    if cell.h2:
        client = H2Client(cell.server.port)
        sid = client.request(f"{path}/{rid}", method, body)
        if marker is not None:
            client.read_until(sid, marker)
        sock = client.sock
    else:
        sock = cell.server.connect()
        sock.sendall(request_bytes(f"{path}/{rid}", method, body))
        if marker is not None:
            read_until(sock, marker)
    with sock:
        started = cell.events.wait(rid, "started", STARTED)
        if body:
            assert started["body_size"] == len(body), started
        t0 = leave(sock, how)
        if how != "half_close":
            return rid, t0
        # Half-closed: the client still reads, until the request ended.
        cell.events.wait(rid, "finished", FINISHED)
    return rid, t0


def left(cell: Cell, path: str, how: How = "close", **kwargs: bytes | str | None) -> Observation:
    rid, t0 = _held(cell, path, how, **kwargs)  # type: ignore[arg-type]
    finished = cell.events.wait(rid, "finished", FINISHED)
    observed = _observed(cell.events, rid, finished, t0, "")
    if observed.trips:
        assert "reason" not in observed.note, observed
    return observed


def keepalive_complete(cell: Cell) -> Observation:
    """Three requests completed one after the other on one connection, then it closes."""
    rids = [new_id() for _ in range(3)]
    finals = []
    if cell.h2:
        client = H2Client(cell.server.port)
        with client.sock:
            for rid in rids:
                stream = client.read_response(client.request(f"/quick/{rid}"))
                assert rid.encode() in stream.body, stream
                finals.append(cell.events.wait(rid, "final", STARTED))
    else:
        with cell.server.connect() as sock:
            for rid in rids:
                sock.sendall(request_bytes(f"/quick/{rid}"))
                assert rid.encode() in read_response(sock)
                finals.append(cell.events.wait(rid, "final", STARTED))
    # Final before the connection closed: it can never trip afterwards.
    assert all(final["can_be_cancelled"] is False for final in finals), finals
    trips = any(final["tripped"] for final in finals)
    return Observation(trips, None, "token final once each response was complete")


def unread_body(cell: Cell) -> Observation:
    """A large upload the endpoint never reads; the client leaves once the whole body is sent,
    or once the server has stopped taking it (nothing taken for ``STALL`` seconds)."""
    rid = new_id()
    with cell.server.connect() as sock:
        # The hold outlasts the stall, so the token still has HOLD seconds once the client left.
        path = f"/unread/{rid}?hold={HOLD + STALL}"
        sock.sendall(request_bytes(path, "POST", length=UNREAD))
        sock.setblocking(False)
        body = memoryview(bytes(UNREAD))
        sent = 0
        deadline = time.monotonic() + STARTED
        while sent < UNREAD and time.monotonic() < deadline:
            _, writable, _ = select.select([], [sock], [], STALL)
            if not writable:
                # A stall counts only once the app runs: some servers (daphne) read the whole
                # body before they start the app, and a loaded machine stalls too.
                if cell.events.get(rid, "started") is not None:
                    break
                continue
            try:
                sent += sock.send(body[sent:])
            except BlockingIOError:
                continue
        sock.settimeout(STARTED)
        # Some servers start the app only once the whole body arrived.
        cell.events.wait(rid, "started", STARTED)
        t0 = leave(sock, "close")
    whole = "whole body sent" if sent == UNREAD else "the server stopped reading the body"
    return outcome(cell.events, rid, t0, whole)


def pipelined(cell: Cell) -> Observation:
    """A second request queued on the connection behind a held one; then the client leaves."""
    rid, queued = new_id(), new_id()
    with cell.server.connect() as sock:
        sock.sendall(request_bytes(f"/hold/{rid}") + request_bytes(f"/quick/{queued}"))
        cell.events.wait(rid, "started", STARTED)
        t0 = leave(sock, "close")
    return outcome(cell.events, rid, t0)


def expect_continue(cell: Cell) -> Observation:
    """Headers with ``Expect: 100-continue``; the body once 100 came (or a bound passed)."""
    rid = new_id()
    body = UPLOAD
    expect = (("Expect", "100-continue"),)
    with cell.server.connect() as sock:
        sock.sendall(request_bytes(f"/upload/{rid}", "POST", length=len(body), headers=expect))
        sock.settimeout(CONTINUE_WAIT)
        try:
            continued = read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100 ")
        except TimeoutError:
            continued = False
        sock.settimeout(STARTED)
        sock.sendall(body)
        started = cell.events.wait(rid, "started", STARTED)
        assert started["body_size"] == len(body), started
        t0 = leave(sock, "close")
    note = "100 Continue sent" if continued else f"no 100 Continue within {CONTINUE_WAIT:g} s"
    return outcome(cell.events, rid, t0, note)


def graceful_shutdown(cell: Cell) -> Observation:
    """A request in flight when the server is asked to stop (SIGTERM); the client stays until
    the request ended (or the server exited), as a client waiting for its response would."""
    rid = new_id()
    path = f"/hold/{rid}?hold={SHUTDOWN_HOLD}"
    with cell.start() as server:
        if cell.h2:
            client = H2Client(server.port)
            client.request(path)
            sock = client.sock
        else:
            sock = server.connect()
            sock.sendall(request_bytes(path))
        with sock:
            cell.events.wait(rid, "started", STARTED)
            t0 = time.monotonic_ns()
            server.terminate()

            def exited() -> None:
                server.process.wait()
                cell.events.post(rid, "exited")

            threading.Thread(target=exited, daemon=True).start()
            cell.events.wait(rid, ("finished", "exited"), SHUTDOWN_HOLD + STARTED)
        status = server.stop(SHUTDOWN_EXIT)
        # Cancelling a request at shutdown is no disconnect: what the server logs for it is
        # reported, not judged.
        errors = cell.column.unexpected_log(server.output())
    hung = "" if status is not None else f"; the server had not exited {SHUTDOWN_EXIT:g} s later"
    if errors:
        hung += f"; the server logged: {errors[0].strip()}"
    try:
        # Datagrams sent before the exit may still be on their way to the collector.
        finished = cell.events.wait(rid, "finished", CONTINUE_WAIT)
    except TimeoutError:
        stopped = f"the worker process was stopped first (exit status {status})"
        return Observation(False, None, f"the request never ended: {stopped}{hung}")
    how = finished["how"]
    ended = "ran to its end" if how == "returned" else f"ended by {how}"
    return _observed(cell.events, rid, finished, t0, f"request {ended}{hung}")


def h2_stream_reset(cell: Cell) -> Observation:
    """One stream reset (RST_STREAM) while a sibling on the same connection completes."""
    rid, sibling = new_id(), new_id()
    client = H2Client(cell.server.port)
    with client.sock:
        reset_sid = client.request(f"/hold/{rid}")
        sibling_sid = client.request(f"/hold/{sibling}?hold=1")
        cell.events.wait(rid, "started", STARTED)
        cell.events.wait(sibling, "started", STARTED)
        t0 = client.reset(reset_sid)
        observed = outcome(cell.events, rid, t0)
        stream = client.read_response(sibling_sid)
    assert (b":status", b"200") in stream.headers, stream
    finished = cell.events.wait(sibling, "finished", FINISHED)
    # The sibling never trips: one stream's reset is not the connection's end.
    assert not finished["tripped"], finished
    return Observation(observed.trips, observed.delay_ms, "sibling stream completed, untripped")


def poll_and_stream(cell: Cell) -> Observation:
    rid, t0 = _held(cell, "/poll-stream", marker=b"data: 0")
    finished = cell.events.wait(rid, "finished", FINISHED)
    polled = "returned True" if finished["is_disconnected"] else "not seen (stream cancelled first)"
    return _observed(cell.events, rid, finished, t0, f"is_disconnected() {polled}")


RUN: dict[str, Callable[[Cell], Observation]] = {
    "close_before_response": lambda cell: left(cell, "/hold"),
    "rst": lambda cell: left(cell, "/hold", "rst"),
    "half_close": lambda cell: left(cell, "/hold", "half_close"),
    "leave_mid_stream": lambda cell: left(cell, "/stream", marker=b"data: 0"),
    "keepalive_complete": keepalive_complete,
    "upload_then_leave": lambda cell: left(cell, "/upload", method="POST", body=UPLOAD),
    "unread_body": unread_body,
    "pipelined": pipelined,
    "expect_continue": expect_continue,
    "graceful_shutdown": graceful_shutdown,
    "def_endpoint": lambda cell: left(cell, "/hold-sync"),
    "base_http_middleware_inside": lambda cell: left(cell, "/bhm-inside/hold"),
    "base_http_middleware_outside": lambda cell: left(cell, "/bhm-outside/hold"),
    "is_disconnected_and_streaming": poll_and_stream,
    "h2_stream_reset": h2_stream_reset,
}
