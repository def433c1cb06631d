"""The HTTP/2 client of the matrix: prior knowledge (h2c) with the h2 package, or over TLS with
ALPN ``h2`` (the proxy fronts, ``tests.proxy``).

The HTTP/1.1 client is a plain socket (:mod:`tests.raw_http`); both leave the way a real client
does (``tests.raw_http.leave``), and an HTTP/2 client can also reset one stream (RST_STREAM).
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events

from tests.raw_http import CLOSED_EARLY, HOST


@dataclass
class Stream:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: bool = False


class H2Client:
    """An HTTP/2 client, blocking, one thread: over cleartext with prior knowledge, or over
    TLS when given ``tls`` (a client context offering ``h2`` by ALPN)."""

    def __init__(self, port: int, timeout: float = 20.0, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.scheme = b"http"
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=HOST)
            assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
            self.scheme = b"https"
        self.authority = f"{HOST}:{port}"
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.streams: dict[int, Stream] = {}
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _pump(self) -> None:
        """Read once from the socket and handle what arrived."""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(CLOSED_EARLY.format(what="the exchange ended", data=b""))
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.streams[event.stream_id].headers = list(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id].body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.streams[event.stream_id].ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.streams[event.stream_id].reset = True
        self._flush()

    def request(self, path: str, method: str = "GET", body: bytes = b"") -> int:
        """Open a stream and send the whole request (flow control respected); its id."""
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        headers = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", self.scheme),
            (b":authority", self.authority.encode()),
        ]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        self.conn.send_headers(sid, headers, end_stream=not body)
        self._flush()
        sent = 0
        while sent < len(body):
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self._pump()
                continue
            chunk = body[sent : sent + window]
            sent += len(chunk)
            self.conn.send_data(sid, chunk, end_stream=sent == len(body))
            self._flush()
        return sid

    def read_until(self, sid: int, marker: bytes) -> bytes:
        stream = self.streams[sid]
        while marker not in stream.body:
            if stream.ended or stream.reset:
                raise ConnectionError(CLOSED_EARLY.format(what=repr(marker), data=stream.body))
            self._pump()
        return stream.body

    def read_response(self, sid: int) -> Stream:
        """Read until the stream ended (or was reset by the server)."""
        stream = self.streams[sid]
        while not (stream.ended or stream.reset):
            self._pump()
        return stream

    def reset(self, sid: int) -> int:
        """Reset one stream (RST_STREAM, CANCEL); the monotonic time just before, in ns."""
        t0 = time.monotonic_ns()
        self.conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
        self._flush()
        return t0

    def close(self) -> None:
        self.sock.close()
