"""HTTP/1.1 by hand over a plain socket: what the real-server tests send, read, and how they leave.

A client leaves the way a real one does: ``close`` (FIN), ``rst`` (``SO_LINGER`` 0: RST), or
``half_close`` (``shutdown(SHUT_WR)``: FIN, but the client still reads). :func:`leave` returns the
``time.monotonic_ns()`` taken just before, the start of a detection delay (CLOCK_MONOTONIC is one
clock for every process on the machine, the server's included).
"""

from __future__ import annotations

import re
import socket
import struct
import time
import uuid
from typing import Literal

How = Literal["close", "rst", "half_close"]

HOST = "127.0.0.1"
CLOSED_EARLY = "the server closed the connection before {what}; received so far: {data!r}"
NO_LENGTH = "no Content-Length in {head!r}"


def new_id() -> str:
    """A fresh request id: the last segment of a test request's path."""
    return uuid.uuid4().hex[:12]


def leave(sock: socket.socket, how: str = "close") -> int:
    """Leave the way ``how`` (a :data:`How`) says; the monotonic time just before, in ns."""
    if how == "rst":
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t0 = time.monotonic_ns()
    if how == "half_close":
        sock.shutdown(socket.SHUT_WR)
    else:
        sock.close()
    return t0


def request_bytes(
    path: str,
    method: str = "GET",
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    length: int | None = None,
) -> bytes:
    """One HTTP/1.1 request; ``length`` overrides the Content-Length (a body sent later).

    A GET without a body has no Content-Length; a POST always has one.
    """
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
    size = len(body) if length is None else length
    if size or method == "POST":
        head += f"Content-Length: {size}\r\nContent-Type: application/octet-stream\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode() + b"\r\n" + body


def _receive(sock: socket.socket, what: str, data: bytes) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError(CLOSED_EARLY.format(what=what, data=data))
    return chunk


def read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    """Read until ``marker`` was received; everything received (``data`` first)."""
    while marker not in data:
        data += _receive(sock, repr(marker), data)
    return data


def _content_length(head: bytes) -> int:
    found = re.search(rb"(?i)content-length: (\d+)", head)
    if found is None:
        raise ConnectionError(NO_LENGTH.format(head=head))
    return int(found.group(1))


def read_response(sock: socket.socket) -> bytes:
    """Read one complete response with a Content-Length body; what came after it is dropped."""
    head, _, body = read_until(sock, b"\r\n\r\n").partition(b"\r\n\r\n")
    length = _content_length(head)
    while len(body) < length:
        body += _receive(sock, "the body", head + body)
    return head + b"\r\n\r\n" + body


def read_responses(sock: socket.socket, count: int = 1) -> list[bytes]:
    """Read exactly ``count`` complete responses with Content-Length bodies, in order (the
    responses to pipelined requests); asserts that nothing came after them."""
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            end = head_end + 4 + _content_length(data[:head_end])
            if len(data) >= end:
                responses.append(data[:end])
                data = data[end:]
                continue
        data += _receive(sock, f"response {len(responses) + 1} of {count}", data)
    assert data == b"", data
    return responses
