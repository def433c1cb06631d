"""A client whose network vanished: the token trips with keepalive settings, not without.

The server runs in one namespace, the clients in another (:mod:`tests.network.netns`). A client
starts a request (an idle long request, or a stream that keeps writing), the test drops every
packet of that connection, and waits for the app's ``tripped`` event with a bound:

* with :class:`fastapi_abort.keepalive.Keepalive` on the listening socket, the kernel gives up
  on the peer and the server reports the disconnect; a second client on the same server, idle
  as long but not cut, is still there (the kernel answered the probes);
* :func:`docs.examples.keepalive_uvicorn.main` does the same for its stream;
* without, nothing trips within :data:`WITHOUT_BOUND`; the network is then restored and the
  client leaves with a FIN, and the token trips, so the silence was the vanished network's.

Each measured delay (from the cut to the trip) is appended as a JSON line to
``build/network/results.jsonl`` and printed (``-s``), never asserted. Locally the module skips
without root, ``ip`` or ``nft``; under ``CI=true`` it fails.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastapi_abort import CancellationReason
from fastapi_abort.keepalive import Keepalive
from tests import ROOT
from tests.events import Collector
from tests.network.app import EVENTS_ENV
from tests.network.netns import PORT, SERVER_ADDRESS, Link, linked, unavailable
from tests.support import missing

pytestmark = pytest.mark.server

RESULTS = ROOT / "build" / "network" / "results.jsonl"
#: Short settings, so that a test takes seconds: detection after 3 s.
FAST = Keepalive(idle=1, interval=1, count=3, user_timeout=3)
#: How long past its detection time a trip may take on a loaded machine before the test fails.
SLACK = 20.0
#: How long the test shows that nothing trips without the settings (the kernel's defaults would
#: take 2 hours and 11 minutes for an idle connection, about 15 minutes for a stream).
WITHOUT_BOUND = 8.0
#: How long the token may take to trip once the client's FIN can reach the server.
FIN_BOUND = 15.0
#: uvicorn's line once it serves, and the example's 499 line.
STARTED = "Application startup complete"
ABORTED = "499 Client Closed Request"
KINDS = ("uvicorn-h11", "uvicorn-httptools", "hypercorn-asyncio")
PATHS = ("idle", "stream")


@pytest.fixture(scope="module", autouse=True)
def namespaces_available() -> None:
    reason = unavailable()
    if reason is None:
        return
    missing(reason, "the network tests")


@pytest.fixture
def events(tmp_path: Path) -> Iterator[Collector]:
    collector = Collector(tmp_path)
    yield collector
    collector.close()


@pytest.fixture
def link(tmp_path: Path, events: Collector) -> Iterator[Link]:
    with linked(tmp_path, {EVENTS_ENV: str(events.path)}) as made:
        yield made


def settings(keepalive: Keepalive) -> dict[str, float]:
    return {
        name: getattr(keepalive, name) for name in ("idle", "interval", "count", "user_timeout")
    }


def record(**fields: object) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(fields)
    with RESULTS.open("a") as results:
        results.write(line + "\n")
    print(line)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_keepalive_trips_the_token(link: Link, events: Collector, kind: str, path: str) -> None:
    link.serve(kind, json.dumps(settings(FAST)))
    _, cut_port = link.client(f"/{path}/cut")
    link.client(f"/{path}/kept")
    events.wait("cut", "started", timeout=30)
    events.wait("kept", "started", timeout=30)

    link.cut(cut_port)
    cut_at = time.monotonic_ns()
    tripped = events.wait("cut", "tripped", timeout=FAST.detection + SLACK)

    assert tripped["reason"] == str(CancellationReason.CLIENT_DISCONNECTED), tripped
    assert events.get("kept", "tripped") is None, events.events("kept")
    record(
        server=kind,
        request=path,
        settings=settings(FAST),
        detection=FAST.detection,
        seconds=round((tripped["t_ns"] - cut_at) / 1e9, 3),
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize("path", PATHS)
def test_without_keepalive_nothing_trips(link: Link, events: Collector, path: str) -> None:
    link.serve("uvicorn-h11", "null")
    client, port = link.client(f"/{path}/cut")
    events.wait("cut", "started", timeout=30)

    link.cut(port)
    with pytest.raises(TimeoutError):
        events.wait("cut", "tripped", timeout=WITHOUT_BOUND)

    link.restore(port)
    assert client.process.stdin is not None
    client.process.stdin.close()  # the client leaves: a FIN, now delivered
    tripped = events.wait("cut", "tripped", timeout=FIN_BOUND)
    assert tripped["reason"] == str(CancellationReason.CLIENT_DISCONNECTED), tripped
    record(server="uvicorn-h11", request=path, settings=None, silent_for=WITHOUT_BOUND)


@pytest.mark.timeout(90)
def test_the_documented_example(link: Link) -> None:
    # docs/examples/keepalive_uvicorn.py's main(), with FAST settings: its stream ends with
    # the 499 line once the client's packets are dropped.
    code = (
        "import logging, keepalive_uvicorn; from fastapi_abort.keepalive import Keepalive; "
        "logging.basicConfig(level=logging.INFO); "
        f"keepalive_uvicorn.main({SERVER_ADDRESS!r}, {PORT}, Keepalive(**{settings(FAST)}))"
    )
    server = link.start(link.server_ns, "example", "-c", code, log=None)
    server.wait_for(STARTED, timeout=30)
    _, port = link.client("/ticks")
    link.cut(port)
    line = server.wait_for(ABORTED, timeout=FAST.detection + SLACK)
    assert re.search(r"^INFO:fastapi_abort:GET /ticks: 499 Client Closed Request after ", line)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("path", PATHS)
def test_gunicorn_when_ready(link: Link, events: Collector, path: str) -> None:
    # gunicorn binds its own sockets; its when_ready hook sets the options on them before it
    # forks its uvicorn workers (tests/network/gunicorn_conf.py).
    link.env["ABORT_KEEPALIVE"] = json.dumps(settings(FAST))
    server = link.start(
        link.server_ns,
        "gunicorn",
        *("-m", "gunicorn", "-c", "tests/network/gunicorn_conf.py"),
        *("--bind", f"{SERVER_ADDRESS}:{PORT}", "tests.network.app:app"),
        log=None,
    )
    server.wait_for(STARTED, timeout=30)
    _, cut_port = link.client(f"/{path}/cut")
    link.client(f"/{path}/kept")
    events.wait("cut", "started", timeout=30)
    events.wait("kept", "started", timeout=30)

    link.cut(cut_port)
    cut_at = time.monotonic_ns()
    tripped = events.wait("cut", "tripped", timeout=FAST.detection + SLACK)

    assert tripped["reason"] == str(CancellationReason.CLIENT_DISCONNECTED), tripped
    assert events.get("kept", "tripped") is None, events.events("kept")
    record(
        server="gunicorn-uvicorn-worker",
        request=path,
        settings=settings(FAST),
        detection=FAST.detection,
        seconds=round((tripped["t_ns"] - cut_at) / 1e9, 3),
    )
