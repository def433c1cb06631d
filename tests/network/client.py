"""The client side: ``python -m tests.network.client HOST PORT PATH`` inside a namespace.

Connects, sends ``GET PATH``, prints its own port (so the test can drop exactly this
connection's packets) and, for a stream, reads until the first chunk so the response is under
way, and goes on reading (and discarding) it, as an SSE client does. Then it waits on stdin:
at end of input it shuts the connection down, sending a FIN (which the test uses, with the
network restored, to show that the pipeline did work).
"""

from __future__ import annotations

import socket
import sys
import threading

#: How long the client waits for the server at most (any one read or connect).
TIMEOUT = 30.0


def main(host: str, port: str, path: str) -> None:
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    if path.startswith("/stream/"):
        received = b""
        while b"data: " not in received:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("the stream ended before its first chunk")
            received += chunk
        sock.settimeout(None)  # the reader waits as long as the test runs
        threading.Thread(target=drain, args=(sock,), daemon=True).start()
    print(sock.getsockname()[1], flush=True)
    sys.stdin.read()
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:  # shut down by main(), or reset by the server
        return


if __name__ == "__main__":
    main(*sys.argv[1:])
