"""Serve one variant of the benchmark app on an inherited listening socket.

``python -m benchmarks.serve VARIANT FD``: the driver binds and listens on 127.0.0.1 itself, so
the port is known and connections queue in the backlog until uvicorn accepts them; no readiness
polling. The server is pinned to core 0 (the load comes from core 1).
"""

from __future__ import annotations

import socket
import sys

import uvicorn

from benchmarks.app import build
from benchmarks.system import SERVER_CORE, pin, raise_nofile


def main(variant: str, fd: int) -> None:
    pin(SERVER_CORE)
    raise_nofile()
    config = uvicorn.Config(
        build(variant),
        http="httptools",
        loop="uvloop",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
