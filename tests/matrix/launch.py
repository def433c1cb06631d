"""Run ``tests.matrix.app:app`` under one server configuration on an inherited listening socket.

``python -m tests.matrix.launch COLUMN FD``: for the servers configured in Python (uvicorn,
hypercorn). The test bound and listens on 127.0.0.1 itself, so connections queue in the backlog
until the server accepts them; no readiness polling. The other servers are started from their own
command lines (see :mod:`tests.matrix.servers`).
"""

from __future__ import annotations

import socket
import sys

APP = "tests.matrix.app:app"
#: Seconds a server gives in-flight requests when asked to stop, before cancelling them.
GRACEFUL_TIMEOUT = 1

UVICORN = {
    "uvicorn-h11": {"http": "h11", "loop": "asyncio"},
    "uvicorn-httptools": {"http": "httptools", "loop": "asyncio"},
    "uvicorn-httptools-uvloop": {"http": "httptools", "loop": "uvloop"},
    # HTTP/2 in uvicorn needs its zttp protocol; cleartext connections that open with the
    # HTTP/2 preface are served as h2c (uvicorn/protocols/http/auto_zttp_impl.py).
    "uvicorn-h2c": {"http": "zttp", "http2": True, "loop": "asyncio"},
}
HYPERCORN = {
    "hypercorn-asyncio": "asyncio",
    "hypercorn-trio": "trio",
    # hypercorn switches a cleartext connection that opens with the HTTP/2 preface to h2
    # (hypercorn/protocol/h11.py, H2ProtocolAssumedError).
    "hypercorn-asyncio-h2c": "asyncio",
    "hypercorn-trio-h2c": "trio",
}
UNKNOWN = "unknown column {column!r}: one of {known}"


def run_uvicorn(column: str, fd: int) -> None:
    import uvicorn

    config = uvicorn.Config(
        APP,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
        **UVICORN[column],  # type: ignore[arg-type]
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def run_hypercorn(column: str, fd: int) -> None:
    from hypercorn.config import Config
    from hypercorn.run import run

    config = Config()
    config.application_path = APP
    config.bind = [f"fd://{fd}"]
    config.loglevel = "INFO"
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.worker_class = HYPERCORN[column]
    # The command line's path with its default single worker process: the main process turns
    # SIGTERM into a graceful shutdown of the worker (hypercorn/run.py, run). In-process
    # (workers = 0), the trio worker installs no SIGTERM handler at all.
    config.workers = 1
    run(config)


def main(column: str, fd: int) -> None:
    if column in UVICORN:
        run_uvicorn(column, fd)
    elif column in HYPERCORN:
        run_hypercorn(column, fd)
    else:
        raise SystemExit(UNKNOWN.format(column=column, known=[*UVICORN, *HYPERCORN]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
