"""Start an app under one server configuration, to be told to stop with requests in flight.

:func:`command` is the command line of each configuration. uvicorn and hypercorn run through
``python -m tests.shutdown_serve KIND FD [GRACEFUL]``, which calls what their own command lines
call (``uvicorn.Server.run``, ``hypercorn.run.run``) but takes a graceful timeout in fractions
of a second (their command lines take whole seconds). The others run from their own command
lines. Every server but granian gets a listening socket the test bound itself (the port is
known, connections wait in the backlog: no readiness polling); granian binds a host and port
only (``granian/cli.py``).

The ``example`` kind runs ``docs/examples/shutdown.py`` under its own ``uvicorn.Server``
subclass.
"""

from __future__ import annotations

import importlib
import signal
import socket
import sys
from typing import Any, ClassVar

from tests import EXAMPLES

APP = "tests.shutdown_app:app"

UVICORN = {"uvicorn-h11": ("h11", "asyncio"), "uvicorn-httptools": ("httptools", "uvloop")}
HYPERCORN = {"hypercorn-asyncio": "asyncio", "hypercorn-trio": "trio"}
GUNICORN = {
    "gunicorn-uvicorn": "uvicorn_worker.UvicornWorker",
    "gunicorn-uvicorn-timeout": "tests.shutdown_serve.TimeoutUvicornWorker",
}
KINDS = (*UVICORN, *HYPERCORN, "granian", "daphne", *GUNICORN, "example")
#: The modules each kind needs.
NEEDS = {
    **{kind: ("uvicorn", http, loop) for kind, (http, loop) in UVICORN.items()},
    "hypercorn-asyncio": ("hypercorn",),
    "hypercorn-trio": ("hypercorn", "trio"),
    "granian": ("granian",),
    "daphne": ("daphne",),
    **{kind: ("gunicorn", "uvicorn_worker") for kind in GUNICORN},
    "example": ("uvicorn",),
}
#: The ``timeout_graceful_shutdown`` of :class:`TimeoutUvicornWorker`: below any
#: ``--graceful-timeout`` the tests give gunicorn (whole seconds), as it must be.
WORKER_TIMEOUT = 0.5

UNKNOWN = "unknown server kind {kind!r}: one of {kinds}"
WHOLE_SECONDS = "{kind} takes its graceful timeout in whole seconds >= 1, got {graceful!r}"
NO_TIMEOUT = "{kind} has no graceful timeout setting: pass None, got {graceful!r}"


def command(kind: str, fd: int, port: int, graceful: float | None) -> list[str]:
    """The command line that serves the app under ``kind``.

    :param fd: the inherited listening socket (granian ignores it).
    :param port: its port (granian binds it itself).
    :param graceful: the seconds the server gives in-flight requests once told to stop
        (granian: ``--workers-kill-timeout``; gunicorn: ``--graceful-timeout``), or None for the
        server's default.
    :raises ValueError: for an unknown kind, or a graceful timeout the server cannot take.
    """
    python = sys.executable
    if kind in UVICORN or kind in HYPERCORN or kind == "example":
        launch = [python, "-m", "tests.shutdown_serve", kind, str(fd)]
        return launch if graceful is None else [*launch, repr(graceful)]
    if kind == "granian":
        kill = [] if graceful is None else ["--workers-kill-timeout", _whole(kind, graceful)]
        return [
            *(python, "-m", "granian", "--interface", "asgi", "--log-level", "info"),
            *("--host", "127.0.0.1", "--port", str(port), *kill, APP),
        ]
    if kind == "daphne":
        if graceful is not None:
            raise ValueError(NO_TIMEOUT.format(kind=kind, graceful=graceful))
        return [python, "-m", "daphne", "--fd", str(fd), APP]
    if kind in GUNICORN:
        timeout = [] if graceful is None else ["--graceful-timeout", _whole(kind, graceful)]
        return [
            *(python, "-m", "gunicorn", "--bind", f"fd://{fd}", "--workers", "1"),
            # Else every gunicorn on the machine shares ~/.gunicorn/gunicorn.ctl (gunicorn 25.1+).
            "--no-control-socket",
            *("--worker-class", GUNICORN[kind], "--log-level", "info", *timeout, APP),
        ]
    raise ValueError(UNKNOWN.format(kind=kind, kinds=KINDS))


def _whole(kind: str, graceful: float) -> str:
    if graceful != int(graceful) or graceful < 1:
        raise ValueError(WHOLE_SECONDS.format(kind=kind, graceful=graceful))
    return str(int(graceful))


def __getattr__(name: str) -> Any:
    # gunicorn imports the worker class by name; built on first use, so that only the
    # gunicorn kinds need uvicorn-worker installed.
    if name == "TimeoutUvicornWorker":
        from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

        class TimeoutUvicornWorker(UvicornWorker):  # type: ignore[misc]
            """uvicorn's worker with a graceful timeout of its own (it sets none)."""

            CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
                **UvicornWorker.CONFIG_KWARGS,
                "timeout_graceful_shutdown": WORKER_TIMEOUT,
            }

        globals()[name] = TimeoutUvicornWorker
        return TimeoutUvicornWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_uvicorn(kind: str, fd: int, graceful: float | None, target: Any = APP) -> None:
    """What ``uvicorn APP`` runs, on the inherited socket (as under gunicorn)."""
    import uvicorn

    http, loop = UVICORN[kind]
    config = uvicorn.Config(
        target,
        http=http,
        loop=loop,
        log_level="info",
        # Annotated int, used as asyncio.wait_for's float timeout (Server.shutdown).
        timeout_graceful_shutdown=graceful,  # type: ignore[arg-type]
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def run_example(fd: int, graceful: float | None) -> None:
    import uvicorn

    sys.path.insert(0, str(EXAMPLES))
    example = importlib.import_module("shutdown")
    config = uvicorn.Config(
        example.app,
        log_level="info",
        timeout_graceful_shutdown=graceful,  # type: ignore[arg-type]
    )
    example.Server(config).run(sockets=[socket.socket(fileno=fd)])


def run_hypercorn(
    worker_class: str, fd: int, graceful: float | None, app: str = APP, workers: int = 1
) -> int:
    """What ``hypercorn APP`` runs: by default a main process and one worker process
    (``--workers 1``); with ``workers=0`` the process that gets the signal serves
    (``hypercorn.run.run`` calls the worker in process)."""
    from hypercorn.config import Config
    from hypercorn.run import run

    config = Config()
    config.application_path = app
    config.bind = [f"fd://{fd}"]
    config.worker_class = worker_class
    config.workers = workers
    config.loglevel = "INFO"
    if graceful is not None:
        config.graceful_timeout = graceful
    exit_code: int = run(config)
    return exit_code


def serve_signalled() -> None:
    """Before a server starts: a shell starts background jobs with SIGINT ignored, and children
    inherit that; the servers must see Ctrl+C as they would in a terminal, whoever started the
    tests."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str]) -> int:
    serve_signalled()
    kind, fd = argv[0], int(argv[1])
    graceful = float(argv[2]) if len(argv) > 2 else None
    if kind in UVICORN:
        run_uvicorn(kind, fd, graceful)
    elif kind == "example":
        run_example(fd, graceful)
    elif kind in HYPERCORN:
        return run_hypercorn(HYPERCORN[kind], fd, graceful)
    else:
        raise SystemExit(UNKNOWN.format(kind=kind, kinds=KINDS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
