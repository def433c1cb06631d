"""A real browser closes one tab of two on one HTTP/2 connection, through each HTTP/2 front end.

The ``rst_stream`` row of ``tests/test_proxies.py`` resets a stream with the ``h2`` package; here
Chromium does what it does for a person: two tabs of one site share one HTTP/2 connection, and
closing the tab whose request is still in flight resets that request's stream (RST_STREAM) and
keeps the connection for the other tab. Debian's chromium runs headless
(:func:`tests.support.chromium`) and trusts the front's throwaway certificate by its key's pin
(``--ignore-certificate-errors-spki-list``), nothing else; the front (nginx, Caddy, h2o: the
HTTP/2 columns of :mod:`tests.proxy.fronts`) proxies over HTTP/1.1 to uvicorn running
:mod:`tests.proxy.app`.

Both tabs load ``/ping`` first, so that the connection is open before the slow requests start;
then each starts a request to ``/hold/{rid}``, which the app holds, in one of two ways
(:data:`LOADS`): the tab loads it as a page, or the page fetches it. The test closes the first
tab and asserts, from the app's records and the front's access log, that exactly that request's
token tripped (client disconnected), that the other request completed with 200, untripped, and
that both came on one client connection, as the front logged them: the sharing is checked, not
assumed. Each cell's delay, from the test's call to close the tab to the trip, is recorded under
``$ABORT_PROXY_DIR`` (column ``chromium-<front>``) for the servers page, before its assertions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from fastapi_abort import CancellationReason
from tests.matrix import records
from tests.proxy.front import Column, Front
from tests.proxy.fronts import BROWSER_COLUMN, HTTP2_COLUMNS, results_dir, running_column, versions
from tests.proxy.page import BROWSER_TITLES
from tests.proxy.upstream import Upstream, serving
from tests.raw_http import new_id
from tests.support import WAIT, chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.server

TESTS = "the browser tests behind the HTTP/2 fronts"  # in a failure under CI: they must run there
#: How a tab starts its request to ``path``, in JavaScript, for each row of the page's table
#: (``tests.proxy.page.BROWSER_TITLES``): it loads it as a page (the tab is still loading when it
#: is closed), or the page fetches it (keeping the response's text).
LOADS = {
    "close_tab_loading": "path => { location.href = path; }",
    "close_tab_fetching": "path => { window.held = fetch(path).then(r => r.text()); }",
}
#: How long the sibling's token is watched for a trip it must not have, once the other tripped.
STAY_SECONDS = 0.5
TIMEOUT = 15_000  # ms, for every playwright action and assertion
WRONG_CONNECTIONS = "the two tabs' requests came on different client connections: {lines}"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with serving(tmp_path_factory.mktemp("uvicorn") / "server.log") as served:
        yield served


@pytest.fixture(scope="module")
def front(
    request: pytest.FixtureRequest, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Front]:
    column: Column = request.param
    directory = tmp_path_factory.mktemp(column.name)
    name = BROWSER_COLUMN.format(column=column.name)
    with running_column(column, upstream.port, directory, TESTS, name) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def browser(front: Front) -> Iterator[Browser]:
    """Chromium trusting the certificate of ``front`` by its pin: one launch per front."""
    assert front.certificate is not None
    pin = f"--ignore-certificate-errors-spki-list={front.certificate.spki_pin()}"
    with chromium(TESTS, pin) as launched:
        yield launched


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh context (profile state, and connections) per test: its tabs share one origin's
    HTTP/2 connection."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT)
    try:
        yield context
    finally:
        context.close()


def open_tab(context: BrowserContext, front: Front) -> Page:
    """A new tab showing ``/ping`` (over HTTP/2, through the front)."""
    page = context.new_page()
    response = page.goto(f"https://127.0.0.1:{front.port}/ping")
    assert response is not None
    assert response.status == 200, response
    return page


def sibling_text(tab: Page, load: str) -> str:
    """The text the sibling tab got for its request, once it completed."""
    if load == "close_tab_loading":
        tab.wait_for_url("**/hold/*", wait_until="load")
        return tab.inner_text("body")
    text: str = tab.evaluate("() => window.held")
    return text


@pytest.mark.parametrize("load", list(BROWSER_TITLES))
@pytest.mark.parametrize(
    "front", HTTP2_COLUMNS, indirect=True, scope="module", ids=lambda column: column.name
)
def test_closing_one_tab_trips_its_request_only(
    browser: Browser, context: BrowserContext, front: Front, upstream: Upstream, load: str
) -> None:
    closed, sibling = new_id(), new_id()
    closing, staying = open_tab(context, front), open_tab(context, front)
    try:
        closing.evaluate(LOADS[load], f"/hold/{closed}")
        staying.evaluate(LOADS[load], f"/hold/{sibling}")
        assert upstream.wait_for(closed, "started")["happened"]
        assert upstream.wait_for(sibling, "started")["happened"]
        left_ns = time.monotonic_ns()
        closing.close()
        close_ms = (time.monotonic_ns() - left_ns) / 1e6
        tripped = upstream.wait_for(closed, "tripped", timeout=WAIT)
        sibling_tripped = upstream.wait_for(sibling, "tripped", timeout=STAY_SECONDS)["tripped"]
        upstream.release(sibling)
        text = sibling_text(staying, load)
    finally:
        staying.close()
    finished = upstream.wait_for(sibling, "finished")
    closed_status, closed_line = front.access(f"/hold/{closed}")
    sibling_status, sibling_line = front.access(f"/hold/{sibling}")
    connections = {front.connection_of(f"/hold/{rid}") for rid in (closed, sibling)}
    delay_ms = (tripped["tripped_ns"] - left_ns) / 1e6 if tripped["tripped"] else None
    note = (
        f"close() returned after {close_ms:.1f} ms; {closed_line}; the sibling tab: {sibling_line}"
    )
    name = BROWSER_COLUMN.format(column=front.column.name)
    found = versions(front.column) | {"chromium": browser.version}
    rounded = None if delay_ms is None else round(delay_ms, 3)
    records.append(name, load, tripped["tripped"], rounded, note, found, results_dir())
    assert tripped["tripped"], tripped
    assert tripped["reason"] == CancellationReason.CLIENT_DISCONNECTED.value, tripped
    assert not sibling_tripped
    assert finished["happened"], finished
    assert not finished["tripped"], finished
    assert sibling in text, text
    assert sibling_status == 200, sibling_line
    assert closed_status != 200, closed_line
    assert len(connections) == 1, WRONG_CONNECTIONS.format(lines=[closed_line, sibling_line])
