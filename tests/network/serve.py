"""The server side: ``python -m tests.network.serve KIND HOST PORT SETTINGS`` inside a namespace.

Binds the listening socket where it runs (a socket belongs to the network namespace it was made
in, so the test cannot make it for the server), with :func:`fastapi_abort.keepalive.listen`
when SETTINGS is a JSON object of :class:`~fastapi_abort.keepalive.Keepalive` fields, a plain
socket when it is ``null``; prints :data:`LISTENING` once it listens, then serves
``tests.network.app`` through :mod:`tests.serve` on that socket.
"""

from __future__ import annotations

import json
import socket
import sys

from fastapi_abort.keepalive import Keepalive, listen
from tests.serve import HYPERCORN, UVICORN, Options, run_hypercorn, run_uvicorn

TARGET = "tests.network.app:app"
LISTENING = "listening"


def bind(host: str, port: int, settings: dict[str, float] | None) -> socket.socket:
    if settings is not None:
        return listen(host, port, Keepalive(**settings))  # type: ignore[arg-type]
    sock = socket.socket()
    sock.bind((host, port))
    sock.listen(256)
    sock.set_inheritable(True)
    return sock


def main(kind: str, host: str, port: str, settings: str) -> None:
    sock = bind(host, int(port), json.loads(settings))
    print(LISTENING, flush=True)
    if kind in UVICORN:
        run_uvicorn(kind, sock.fileno(), TARGET, Options())
    elif kind in HYPERCORN:
        run_hypercorn(kind, sock.fileno(), TARGET, Options())
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
