"""The deadline budget across real services on loopback: two and three deep, and hostile values.

Four services of ``tests.servers.budget_app`` run under real uvicorn: ``a`` (a deadline of its
own) calls ``b``, which calls ``c``; both read the budget header (``max_budget``), and
``ignoring`` does not. Each reports when it started (with the header it got and what its token
had left), when it called on (what was left then) and why its token tripped, stamped on the
machine's one monotonic clock, so that the trips of three processes compare.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fastapi_abort import BUDGET_HEADER
from tests import ROOT
from tests.events import Collector, Event
from tests.raw_http import new_id, read_response, request_bytes
from tests.serve import Options, Served, running
from tests.support import WAIT

pytestmark = pytest.mark.server

KIND = "uvicorn-httptools"
TARGET = "tests.servers.budget_app:app"
#: The first service's own deadline, and the most any service takes from a caller's header.
DEADLINE = 1.0
MAX = 30.0
DEADLINE_LINE = "504 Gateway Timeout"


@dataclass
class Chain:
    a: Served
    b: Served
    c: Served
    ignoring: Served
    events: Collector


def url(served: Served) -> str:
    return f"http://127.0.0.1:{served.port}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    directory = tmp_path_factory.mktemp("budget")
    started: list[Served] = []
    with contextlib.closing(Collector(directory)) as events, contextlib.ExitStack() as stack:

        def start(name: str, **env: str) -> Served:
            env = {"BUDGET_EVENTS": str(events.path), "BUDGET_NAME": name, **env}
            log = Path(directory / f"{name}.log")
            served = stack.enter_context(running(KIND, log, TARGET, env=env))
            started.append(served)
            return served

        c = start("c", BUDGET_MAX=str(MAX))
        b = start("b", BUDGET_MAX=str(MAX), BUDGET_NEXT=url(c))
        a = start("a", BUDGET_MAX=str(MAX), BUDGET_NEXT=url(b), BUDGET_DEADLINE=str(DEADLINE))
        # One request down the chain first, so that every test finds its connections open.
        warm = httpx.get(f"{url(a)}/chain/{new_id()}", headers={BUDGET_HEADER: "100"}, timeout=WAIT)
        assert warm.status_code == 504
        yield Chain(a, b, c, start("ignoring"), events)
    for served in started:
        # The deadline's one WARNING per request that it ended, and nothing else.
        assert not served.noisy(DEADLINE_LINE), served.output()


def ended(chain: Chain, rid: str, names: str) -> dict[str, Event]:
    return {name: chain.events.wait(rid, f"{name}.cancelled", WAIT) for name in names}


def assert_budget_handed_on(chain: Chain, rid: str, caller: str, callee: str) -> None:
    """What ``callee`` was given is at most what ``caller`` had left when it called, and its
    token has at most that: never more time downstream than upstream."""
    calling = chain.events.wait(rid, f"{caller}.calling", WAIT)
    started = chain.events.wait(rid, f"{callee}.started", WAIT)
    (header,) = started["headers"]
    assert int(header) <= calling["remaining"] * 1000
    assert started["remaining"] <= int(header) / 1000


def skew_ms(chain: Chain, rid: str) -> dict[str, float]:
    """How much later than ``a``'s each service's deadline fell, in milliseconds."""
    deadlines = {
        name: started["t_ns"] + started["remaining"] * 1e9
        for name in "abc"
        if (started := chain.events.get(rid, f"{name}.started")) is not None
    }
    return {name: round((ns - deadlines["a"]) / 1e6, 3) for name, ns in deadlines.items()}


def report(chain: Chain, rid: str, trips: dict[str, Event]) -> None:
    """The figures of docs/propagation.md, printed (``pytest -s``)."""
    reasons = {name: event["reason"] for name, event in trips.items()}
    print("deadlines after a's (ms):", skew_ms(chain, rid), reasons)


def test_three_services_bound_to_the_token_end_by_the_first_ones_deadline(chain: Chain) -> None:
    rid = new_id()
    reply = httpx.get(f"{url(chain.a)}/chain/{rid}", timeout=WAIT)
    assert reply.status_code == 504
    trips = ended(chain, rid, "abc")
    assert chain.events.wait(rid, "a.started", WAIT)["headers"] == []
    assert_budget_handed_on(chain, rid, "a", "b")
    assert_budget_handed_on(chain, rid, "b", "c")
    assert trips["a"]["reason"] == "deadline"
    # Each downstream deadline comes a little before its caller's (the time on the wire, the
    # budget rounded down), and the caller closes the connection at its own: a loaded machine
    # may run that close first.
    assert {trips["b"]["reason"], trips["c"]["reason"]} <= {"deadline", "client disconnected"}
    # A 504 of the next service, once the budget sent ran out, is the caller's own deadline:
    # nobody's endpoint goes on with the reply.
    assert chain.events.get(rid, "a.replied") is None
    assert chain.events.get(rid, "b.replied") is None
    report(chain, rid, trips)


def test_three_services_with_the_header_written_by_hand_each_trip_with_deadline(
    chain: Chain,
) -> None:
    # A plain client waits for the reply whatever happens: no service sees its caller leave
    # before its own deadline, so every token trips for its deadline, the last service first.
    rid = new_id()
    reply = httpx.get(f"{url(chain.a)}/chain/{rid}", params={"mode": "manual"}, timeout=WAIT)
    assert reply.status_code == 504
    trips = ended(chain, rid, "abc")
    assert_budget_handed_on(chain, rid, "a", "b")
    assert_budget_handed_on(chain, rid, "b", "c")
    assert [trips[name]["reason"] for name in "abc"] == ["deadline"] * 3
    assert chain.events.wait(rid, "b.replied", WAIT)["status"] == 504
    assert chain.events.wait(rid, "a.replied", WAIT)["status"] == 504
    assert trips["c"]["t_ns"] <= trips["b"]["t_ns"] <= trips["a"]["t_ns"]
    report(chain, rid, trips)


def test_two_services_take_their_budget_from_the_clients_header(chain: Chain) -> None:
    rid = new_id()
    reply = httpx.get(f"{url(chain.b)}/chain/{rid}", headers={BUDGET_HEADER: "500"}, timeout=WAIT)
    assert reply.status_code == 504
    assert reply.headers["content-type"] == "application/problem+json"
    trips = ended(chain, rid, "bc")
    started = chain.events.wait(rid, "b.started", WAIT)
    assert started["headers"] == ["500"]
    assert 0 < started["remaining"] <= 0.5
    assert_budget_handed_on(chain, rid, "b", "c")
    assert trips["b"]["reason"] == "deadline"
    assert trips["c"]["reason"] in {"deadline", "client disconnected"}


def test_a_budget_of_zero_ends_the_request_at_once(chain: Chain) -> None:
    rid = new_id()
    reply = httpx.get(f"{url(chain.c)}/chain/{rid}", headers={BUDGET_HEADER: "0"}, timeout=WAIT)
    assert reply.status_code == 504
    assert ended(chain, rid, "c")["c"]["reason"] == "deadline"


def remaining(served: Served, headers: list[tuple[str, str]]) -> float | None:
    """What ``served``'s token had left for a request with ``headers``: sent on a raw socket,
    as a hostile client would (httpx refuses some of these values)."""
    with served.connect() as client:
        client.sendall(request_bytes("/remaining", headers=tuple(headers)))
        head, _, body = read_response(client).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    value: float | None = json.loads(body)["remaining"]
    return value


@pytest.mark.parametrize(
    "value",
    ["-5", "+5", "1e3", "1.5", "abc", "0x10", "", "9" * 13, "9" * 20, "12 34"],
)
def test_a_hostile_budget_is_ignored(chain: Chain, value: str) -> None:
    assert remaining(chain.c, [(BUDGET_HEADER, value)]) is None


@pytest.mark.parametrize(
    ("headers", "most"),
    [
        ([(BUDGET_HEADER, "250")], 0.25),
        ([(BUDGET_HEADER, "  250 ")], 0.25),
        ([(BUDGET_HEADER, "900"), (BUDGET_HEADER, "abc"), (BUDGET_HEADER, "300")], 0.3),
        ([(BUDGET_HEADER, "9" * 12)], MAX),
    ],
)
def test_a_valid_budget_counts_the_smallest_and_is_capped(
    chain: Chain, headers: list[tuple[str, str]], most: float
) -> None:
    left = remaining(chain.c, headers)
    assert left is not None
    assert most - 1 < left <= most


def test_a_service_without_max_budget_ignores_the_header(chain: Chain) -> None:
    assert remaining(chain.ignoring, [(BUDGET_HEADER, "300")]) is None


def test_the_example_stops_pricing_when_the_shops_deadline_passes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # docs/examples/budget.py as the page runs it: pricing, then the shop pointed at it.
    directory = tmp_path_factory.mktemp("budget-example")
    examples = {"PYTHONPATH": str(ROOT / "docs" / "examples")}
    logged = Options(common_log=True)  # the fastapi_abort logger's INFO lines too
    with running(KIND, directory / "pricing.log", "budget:pricing", logged, examples) as pricing:
        env = {**examples, "PRICING_URL": url(pricing)}
        with running(KIND, directory / "shop.log", "budget:shop", env=env) as shop:
            reply = httpx.get(f"{url(shop)}/quote/7", timeout=WAIT)
        assert reply.status_code == 504
        assert reply.json()["detail"] == "The request did not complete within its 2 s deadline."
    # Stopped, pricing has logged how its request ended (uvicorn waits for it): by its own
    # deadline, the budget, or by the shop hanging up at its deadline, whichever it heard first;
    # either way at about 2 s, not after the 5 s of its computation.
    (line,) = re.findall(
        r"GET /price/7: (?:504 Gateway Timeout|499 Client Closed).*", pricing.output()
    )
    assert float(re.findall(r"after (\d+\.\d+) s", line)[0]) < 4
