"""Run ``tests.server_app:app`` under one server configuration on an inherited listening socket.

``python -m tests.serve KIND FD``: the test binds and listens on 127.0.0.1 itself, so the port is
known and connections queue in the backlog until the server accepts them; no readiness polling.
"""

from __future__ import annotations

import asyncio
import socket
import sys

UVICORN = {"uvicorn-h11": ("h11", "asyncio"), "uvicorn-httptools": ("httptools", "uvloop")}
HYPERCORN = ("hypercorn-asyncio", "hypercorn-trio")
KINDS = (*UVICORN, *HYPERCORN)


def run_uvicorn(kind: str, fd: int) -> None:
    import uvicorn

    http, loop = UVICORN[kind]
    config = uvicorn.Config("tests.server_app:app", http=http, loop=loop, log_level="info")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def run_hypercorn(kind: str, fd: int) -> None:
    from hypercorn.config import Config

    from tests.server_app import app

    config = Config()
    config.bind = [f"fd://{fd}"]
    config.loglevel = "INFO"
    if kind == "hypercorn-asyncio":
        from hypercorn.asyncio import serve as serve_asyncio

        asyncio.run(serve_asyncio(app, config))  # type: ignore[arg-type]
    else:
        import trio
        from hypercorn.trio import serve as serve_trio

        trio.run(serve_trio, app, config)  # type: ignore[arg-type]


def main(kind: str, fd: int) -> None:
    if kind in UVICORN:
        run_uvicorn(kind, fd)
    elif kind in HYPERCORN:
        run_hypercorn(kind, fd)
    else:
        raise SystemExit(f"unknown server kind {kind!r}; one of {KINDS}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
