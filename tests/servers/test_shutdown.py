"""What the request token does when the server is told to stop with requests in flight.

Real servers on 127.0.0.1, real signals. Each test starts one server configuration, opens one
connection per request kind (``async``: an endpoint awaiting ``ct.sleep``; ``sync``: a ``def``
endpoint looping on ``ct.wait_blocking`` in a worker thread; ``stream``: a streaming response),
waits until every request has started (an event the app sends, see ``tests/shutdown_app.py``),
signals the server, and waits with a bound for the process to exit. It then pins, per request,
whether the token tripped and with which reason, how the app's code ended, what the client
received, and what the server logged. ``docs/shutdown.md`` tells the same story for users.

Short graceful timeouts keep it fast; ``hold`` is how long a request runs if nothing stops it.
Locally a test skips when its server is not installed; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import math
import signal
import time
import uuid
from dataclasses import dataclass, field

import pytest

from tests.events import Collector, Event
from tests.shutdown_app import EVENTS_ENV, LIFESPAN
from tests.shutdown_serve import NEEDS, WORKER_TIMEOUT, command
from tests.signalled import BOUND, Client, Server, collected_events, require

pytestmark = pytest.mark.server

#: A request that nothing stops outlives every test.
FOREVER = 60.0
ROUTES = ("async", "sync", "stream")


@dataclass
class Outcome:
    """What happened to one request."""

    tripped: Event | None
    ended: Event | None
    client: Client

    @property
    def reason(self) -> str | None:
        return None if self.tripped is None else str(self.tripped["reason"])

    @property
    def how(self) -> str | None:
        return None if self.ended is None else str(self.ended["how"])


@dataclass
class Shutdown:
    """What one signalled server did."""

    kind: str
    returncode: int
    output: str
    signalled_ns: int
    exited_ns: int
    lifespan_shutdown: Event | None
    requests: dict[str, Outcome] = field(default_factory=dict)

    def figures(self) -> str:
        """Milliseconds from the signal to each trip and end, and to the exit."""

        def ms(event: Event | None) -> str:
            return "-" if event is None else f"{(event['t_ns'] - self.signalled_ns) / 1e6:.0f} ms"

        parts = [f"{self.kind}: exit {(self.exited_ns - self.signalled_ns) / 1e6:.0f} ms"]
        parts += [
            f"{route}: tripped {r.reason} {ms(r.tripped)}, ended {r.how} {ms(r.ended)}, "
            f"client {r.client.status}"
            for route, r in self.requests.items()
        ]
        return "; ".join(parts)


def _server(kind: str, graceful: float | None, events: Collector) -> Server:
    require(kind, NEEDS[kind])
    env = {EVENTS_ENV: str(events.path)}
    return Server(kind, lambda fd, port: command(kind, fd, port, graceful), env)


def shutdown(
    kind: str,
    graceful: float | None,
    holds: dict[str, float],
    *signals: signal.Signals,
    second_after: str = "",
) -> Shutdown:
    """Start ``kind``, start one request per route of ``holds``, signal, wait for the exit.

    :param holds: route -> seconds the request runs if nothing stops it.
    :param signals: sent in order (SIGTERM if none), each after the first once the server
        logged ``second_after``.
    """
    with collected_events("shutdown-") as events:
        server = _server(kind, graceful, events)
        try:
            rids = {route: uuid.uuid4().hex[:12] for route in holds}
            clients = {
                route: Client(server.port, f"/{route}/{rids[route]}?hold={hold}")
                for route, hold in holds.items()
            }
            for rid in rids.values():
                events.wait(rid, "started", BOUND)
            first, *more = signals or (signal.SIGTERM,)
            signalled_ns = time.monotonic_ns()
            server.process.send_signal(first)
            for sig in more:
                server.wait_logged(second_after)
                server.process.send_signal(sig)
            returncode = server.wait_exit()
            exited_ns = time.monotonic_ns()
        finally:
            server.kill()
        for client in clients.values():
            client.finish()
        result = Shutdown(
            kind,
            returncode,
            server.output(),
            signalled_ns,
            exited_ns,
            events.get(LIFESPAN, "shutdown"),
        )
        for route, rid in rids.items():
            tripped, ended = events.get(rid, "tripped"), events.get(rid, "ended")
            result.requests[route] = Outcome(tripped, ended, clients[route])
        print(result.figures())  # shown with -s or on failure: the figures of docs/shutdown.md
        return result


def everywhere(hold: float) -> dict[str, float]:
    return dict.fromkeys(ROUTES, hold)


def assert_all_completed(result: Shutdown) -> None:
    """Every request ran to its end: no trip, a whole 200 response, before the app's shutdown."""
    for route, outcome in result.requests.items():
        assert outcome.how == "completed", (route, result.figures())
        assert outcome.tripped is None, (route, result.figures())
        assert outcome.client.status == 200, (route, outcome.client.data)
        assert outcome.client.complete, (route, outcome.client.data)
        assert outcome.ended is not None
        assert result.lifespan_shutdown is not None, result.output
        assert outcome.ended["t_ns"] < result.lifespan_shutdown["t_ns"]


def assert_nothing_ran_to_an_end(result: Shutdown) -> None:
    """The process was killed: the app's code never ended, the token never tripped."""
    for route, outcome in result.requests.items():
        assert outcome.ended is None, (route, result.figures())
        assert outcome.tripped is None, (route, result.figures())
        assert not outcome.client.complete, (route, outcome.client.data)
    assert result.lifespan_shutdown is None


# -- uvicorn ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uvicorn-h11", "uvicorn-httptools"])
def test_uvicorn_without_a_graceful_timeout_waits_for_every_request(kind: str) -> None:
    """``Server.shutdown`` (uvicorn/server.py) waits for connections and tasks with
    ``asyncio.wait_for(..., timeout=timeout_graceful_shutdown)``: None, by default, is forever.
    The requests here end after 1.5 s; one that never ends would hold the shutdown forever."""
    result = shutdown(kind, None, everywhere(1.5))
    assert_all_completed(result)
    assert "Waiting for connections to close." in result.output
    # The signal is re-raised once the server is done (Server.capture_signals).
    assert result.returncode == -signal.SIGTERM


@pytest.mark.parametrize("kind", ["uvicorn-h11", "uvicorn-httptools"])
def test_uvicorn_cancels_at_its_graceful_timeout_and_the_token_trips(kind: str) -> None:
    """Once ``timeout_graceful_shutdown`` runs out, uvicorn cancels every request task
    (``CancelledError``, uvicorn/server.py ``Server.shutdown``); the middleware cancels the
    token with ``SHUTDOWN`` and re-raises. A ``def`` endpoint's worker thread is not waited for
    on asyncio (a native ``Task.cancel()`` goes through anyio's shield): its token trips at
    once too, and the thread stops at its next check if the process still lives. uvicorn
    answers 500 to a request whose response had not started (``run_asgi`` in
    protocols/http/h11_impl.py and httptools_impl.py) and logs it.

    The stream's token does not trip on SIGTERM: its cancellation crosses a task group
    (Starlette's ``StreamingResponse``) and takes more loop iterations than uvicorn's lifespan
    shutdown, after which uvicorn re-raises SIGTERM with the default handler
    (``capture_signals``) and the process dies before the cancellation reaches the middleware.
    """
    result = shutdown(kind, 0.5, everywhere(FOREVER))
    sync, async_, stream = (result.requests[route] for route in ("sync", "async", "stream"))
    assert async_.reason == "shutdown"
    assert async_.how == "CancelledError"
    assert sync.reason == "shutdown"
    # The thread stops at its next check of the token, unless the re-raised SIGTERM (below)
    # ends the process first: uvicorn does not wait for a thread it stopped waiting for.
    assert (sync.how, sync.ended and sync.ended["reason"]) in (
        ("OperationCancelled", "shutdown"),
        (None, None),
    )
    assert async_.client.status == sync.client.status == 500
    assert stream.how == "CancelledError"
    assert stream.reason is None
    assert stream.client.status == 200
    assert not stream.client.complete
    assert "ERROR:    Cancel 3 running task(s), timeout graceful shutdown exceeded" in (
        result.output
    )
    assert result.output.count("ERROR:    Exception in ASGI application") == 2
    assert result.returncode == -signal.SIGTERM


def test_uvicorn_on_sigint_lets_the_cancelled_stream_finish() -> None:
    """On SIGINT, the signal uvicorn re-raises at the end reaches ``asyncio.Runner``'s own
    handler, which cancels the main task; the runner then cancels what is left and waits for
    it, so the stream's cancellation reaches the middleware and its token trips too."""
    result = shutdown("uvicorn-h11", 0.5, everywhere(FOREVER), signal.SIGINT)
    assert {route: r.reason for route, r in result.requests.items()} == dict.fromkeys(
        ROUTES, "shutdown"
    )
    assert result.returncode == -signal.SIGINT


def test_uvicorn_second_ctrl_c_cancels_every_request_at_once() -> None:
    """A second SIGINT sets ``force_exit``: uvicorn stops waiting and skips the lifespan
    shutdown; ``asyncio.Runner`` then cancels every request task, and every token trips with
    ``SHUTDOWN``, without a graceful timeout."""
    result = shutdown(
        "uvicorn-h11",
        None,
        everywhere(FOREVER),
        signal.SIGINT,
        signal.SIGINT,
        second_after="Waiting for connections to close.",
    )
    assert {route: r.reason for route, r in result.requests.items()} == dict.fromkeys(
        ROUTES, "shutdown"
    )
    assert result.lifespan_shutdown is None


# -- hypercorn ----------------------------------------------------------------------------------


def test_hypercorn_asyncio_cancels_after_its_graceful_timeout_and_the_token_trips() -> None:
    """After SIGTERM, hypercorn's main process sets the workers' shutdown event; the worker
    stops accepting, then waits ``graceful_timeout`` (3 s by default) for its connection tasks
    and cancels them (``asyncio.wait_for`` in hypercorn/asyncio/run.py ``worker_serve``). Every
    token trips with ``SHUTDOWN``; the ``def`` endpoint's thread stops at its next check
    (native cancellation is not held by anyio's shield). A request whose response had not
    started gets a 500 (``HTTPStream`` on ``send(None)``). The lifespan shutdown comes after."""
    result = shutdown("hypercorn-asyncio", 0.5, everywhere(FOREVER))
    assert {route: r.reason for route, r in result.requests.items()} == dict.fromkeys(
        ROUTES, "shutdown"
    )
    sync = result.requests["sync"]
    assert (sync.how, sync.ended and sync.ended["reason"]) == ("OperationCancelled", "shutdown")
    assert result.requests["async"].client.status == sync.client.status == 500
    assert not result.requests["stream"].client.complete
    assert result.lifespan_shutdown is not None
    assert all(
        r.tripped is not None and r.tripped["t_ns"] < result.lifespan_shutdown["t_ns"]
        for r in result.requests.values()
    )
    assert result.returncode == 0


def test_hypercorn_trio_holds_a_def_endpoint_until_its_thread_returns() -> None:
    """On trio, hypercorn cancels the server nursery ``graceful_timeout`` after the shutdown
    (hypercorn/trio/run.py): async code gets ``trio.Cancelled`` and its token trips with
    ``SHUTDOWN``. A ``def`` endpoint is different: anyio runs it with
    ``trio.to_thread.run_sync`` under a shielded scope (``abandon_on_cancel=False``), so the
    cancellation waits until the thread returns; the thread never sees the token in time, runs
    to its end, and only then does the token trip, with nobody left to stop. The client gets
    no response at all."""
    holds = {"async": FOREVER, "stream": FOREVER, "sync": 2.0}
    result = shutdown("hypercorn-trio", 0.5, holds)
    for route in ("async", "stream"):
        assert result.requests[route].reason == "shutdown"
        assert result.requests[route].how == "Cancelled"
    sync = result.requests["sync"]
    assert sync.how == "completed"
    assert sync.reason == "shutdown"
    assert sync.ended is not None
    assert sync.tripped is not None
    assert sync.ended["t_ns"] < sync.tripped["t_ns"]
    assert sync.client.data == b""
    assert result.returncode == 0


# -- granian, daphne, gunicorn ------------------------------------------------------------------


def test_granian_waits_for_every_request() -> None:
    """granian's worker stops accepting and lets hyper finish its connections; its main
    process waits for the worker with no bound by default (``--workers-kill-timeout`` unset,
    granian/server/common.py ``_stop_workers``). Nothing is cancelled."""
    result = shutdown("granian", None, everywhere(1.5))
    assert_all_completed(result)
    assert result.returncode == 0


def test_granian_kills_its_worker_after_the_kill_timeout_and_the_token_never_trips() -> None:
    """With ``--workers-kill-timeout``, the main process SIGKILLs a worker that has not
    stopped: no task is cancelled, no ``finally`` runs, the lifespan shutdown never comes."""
    result = shutdown("granian", 1, everywhere(FOREVER))
    assert_nothing_ran_to_an_end(result)
    assert "Killing worker-1 after it refused to gracefully stop" in result.output


def test_daphne_cancels_every_request_at_once() -> None:
    """daphne has no graceful period: on SIGTERM, Twisted's "before shutdown" trigger
    ``Server.kill_all_applications`` (daphne/server.py) cancels every application task at once,
    and every token trips with ``SHUTDOWN``. daphne speaks no lifespan protocol."""
    result = shutdown("daphne", None, everywhere(FOREVER))
    assert {route: r.reason for route, r in result.requests.items()} == dict.fromkeys(
        ROUTES, "shutdown"
    )
    sync = result.requests["sync"]
    assert (sync.how, sync.ended and sync.ended["reason"]) == ("OperationCancelled", "shutdown")
    assert "Killed 3 pending application instances" in result.output
    assert result.returncode == 0


def test_gunicorn_kills_uvicorn_workers_after_its_graceful_timeout() -> None:
    """gunicorn sends SIGTERM to its workers and SIGKILLs them after ``--graceful-timeout``
    (30 s by default, gunicorn/arbiter.py ``Arbiter.stop``). ``UvicornWorker`` sets no
    ``timeout_graceful_shutdown``, so uvicorn inside waits until it is killed: the token never
    trips."""
    result = shutdown("gunicorn-uvicorn", 1, everywhere(FOREVER))
    assert_nothing_ran_to_an_end(result)
    assert "Waiting for connections to close." in result.output


def test_gunicorn_worker_with_its_own_graceful_timeout_trips_the_token() -> None:
    """A ``UvicornWorker`` subclass whose ``CONFIG_KWARGS`` sets ``timeout_graceful_shutdown``
    below gunicorn's ``--graceful-timeout`` behaves as uvicorn does on its own."""
    # gunicorn takes whole seconds; it must leave uvicorn's timeout the time to run out.
    result = shutdown(
        "gunicorn-uvicorn-timeout", math.ceil(WORKER_TIMEOUT) + 1, everywhere(FOREVER)
    )
    for route in ("async", "sync"):
        assert result.requests[route].reason == "shutdown"
    assert "Cancel 3 running task(s), timeout graceful shutdown exceeded" in result.output


# -- ending streams early, as docs/shutdown.md recommends -----------------------------------------


def test_example_ends_its_streams_when_shutdown_starts() -> None:
    """``docs/examples/shutdown.py``: the stream is linked to a token the ``Server`` subclass
    cancels as soon as shutdown starts. Its graceful timeout is 30 s, longer than this test
    waits for the exit: the stream ends by itself, with its goodbye event and a complete
    response, and nothing is cancelled by the server."""
    with collected_events("shutdown-") as events:
        server = _server("example", 30, events)
        try:
            client = Client(server.port, "/ticks")
            client.wait_for(b"data: 0\n\n")
            server.process.send_signal(signal.SIGTERM)
            returncode = server.wait_exit()
        finally:
            server.kill()
        client.finish()
    assert client.status == 200
    assert client.complete
    assert b"event: restart\nretry: 2000\ndata: server restarting\n\n" in client.data
    assert "timeout graceful shutdown exceeded" not in server.output()
    assert "ERROR" not in server.output()
    assert returncode == -signal.SIGTERM
