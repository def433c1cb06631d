"""The demo in a real browser: Debian's chromium, headless, driven by playwright, on loopback.

Locally these tests skip when chromium or the playwright package is missing; under ``CI=true``
they fail instead. Every wait is bounded: playwright's own timeouts, or a server log line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support import Demo, chromium, running_demo

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.server

TESTS = "the browser tests"  # in a failure under CI: they must run there
TIMEOUT = 15_000  # ms, for every playwright action and assertion
CANCELLED = r"cancelled \(499\) after \d\.\d\d s"  # a panel row whose client left


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(TESTS) as launched:
        yield launched


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("browser") / "demo.sqlite3") as server:
        yield server


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT)
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT)
    try:
        yield context
    finally:
        context.close()


def open_panel(context: BrowserContext, demo: Demo) -> Page:
    """The index page, whose live panel shows the last requests."""
    panel = context.new_page()
    panel.goto(demo.url)
    return panel


def close_tab_opened_by(context: BrowserContext, opener: Page) -> None:
    """Close the tab that a link on ``opener`` opened, as a person closes it: while it loads.

    Playwright hands out the new tab's ``Page`` only once its response has started, too late
    for a page that is still loading; the DevTools protocol can close it before that.
    """
    cdp = context.new_cdp_session(opener)
    opener_id = cdp.send("Target.getTargetInfo")["targetInfo"]["targetId"]
    tabs = [tab for tab in cdp.send("Target.getTargets")["targetInfos"] if tab["type"] == "page"]
    (tab,) = (tab for tab in tabs if tab.get("openerId") == opener_id)
    cdp.send("Target.closeTarget", {"targetId": tab["targetId"]})
    cdp.detach()


def expect_newest_row(panel: Page, path: str, outcome: str, text: str) -> None:
    """The panel's newest row for ``path`` (rows are newest first) comes to show ``outcome``
    (its class) and a text matching ``text``."""
    from playwright.sync_api import expect

    row = panel.locator(f'tr[data-path="{path}"]').first
    expect(row).to_have_class(outcome)
    expect(row).to_contain_text(re.compile(text))


def elapsed(line: str) -> float:
    match = re.search(r"after (\d+\.\d+) s", line)
    assert match is not None, line
    return float(match.group(1))


def test_closing_the_draw_tab_stops_the_draw(context: BrowserContext, demo: Demo) -> None:
    from playwright.sync_api import expect

    panel = open_panel(context, demo)
    shop = context.new_page()
    shop.goto(f"{demo.url}/happy")
    shop.click('a[href="/happy/draw"]')
    expect(panel.locator('tr.running[data-path="/happy/draw"]')).to_have_count(1)
    time.sleep(1)  # the scenario: the player gives up after about a second
    close_tab_opened_by(context, shop)
    demo.wait_for_line(r"demo_app\.lottery: request cancelled")
    line = demo.wait_for_line(r"fastapi_abort: GET /happy/draw: 499 Client Closed Request")
    assert elapsed(line) < 2.5  # stopped at a round boundary: no further rounds ran
    expect_newest_row(panel, "/happy/draw", "cancelled", CANCELLED)


def test_a_finished_draw_shows_the_lucky_number(context: BrowserContext, demo: Demo) -> None:
    shop = context.new_page()
    shop.goto(f"{demo.url}/happy")
    # Listened for on the context: the tab's Page only exists once its response has started,
    # which may be after the alert has shown.
    with context.expect_event("dialog") as alert:
        shop.click('a[href="/happy/draw-from-request"]')
    dialog = alert.value
    assert re.fullmatch(r"Your lucky number: \d{1,3}", dialog.message)
    dialog.accept()


def test_refreshing_while_slow_loads_stops_it(context: BrowserContext, demo: Demo) -> None:
    from playwright.sync_api import expect

    panel = open_panel(context, demo)
    page = context.new_page()
    page.goto(demo.url)
    page.click('a[href="/slow"]', no_wait_after=True)
    expect(panel.locator('tr.running[data-path="/slow"]')).to_have_count(1)
    # Refresh while it loads (the browser drops the request for /slow and reloads the page it
    # shows). Through DevTools: playwright's reload() would wait for /slow first.
    cdp = context.new_cdp_session(page)
    cdp.send("Page.reload")
    cdp.detach()
    line = demo.wait_for_line(r"fastapi_abort: GET /slow: 499 Client Closed Request")
    assert elapsed(line) < 10
    expect_newest_row(panel, "/slow", "cancelled", CANCELLED)


def test_closing_the_stream_stops_the_draws(context: BrowserContext, demo: Demo) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(f"{demo.url}/stream")
    expect(page.locator("#draws li")).to_have_count(2)
    page.close()
    line = demo.wait_for_line(r"demo_app\.stream: stream ended after \d+ of 20 draws")
    assert int(re.search(r"after (\d+) of", line).group(1)) < 20  # type: ignore[union-attr]


def test_a_waiting_browser_gets_the_504_of_the_deadline(
    context: BrowserContext, demo: Demo
) -> None:
    from playwright.sync_api import expect

    panel = open_panel(context, demo)
    page = context.new_page()
    page.goto(f"{demo.url}/deadline")
    page.get_by_role("button", name="Full draw").click()
    expect(page.locator("#result")).to_have_text(
        "504 Gateway Timeout: The request did not complete within its 2 s deadline."
    )
    expect(page.locator("#raw")).to_contain_text("HTTP 504, application/problem+json")
    demo.wait_for_line(r"fastapi_abort: GET /deadline/draw: 504 Gateway Timeout")
    expect_newest_row(
        panel, "/deadline/draw", "deadline", r"deadline passed \(504\) after \d\.\d\d s"
    )


def test_the_deadline_draw_opened_in_the_browser_shows_the_problem(
    context: BrowserContext, demo: Demo
) -> None:
    page = context.new_page()
    response = page.goto(f"{demo.url}/deadline/draw")
    assert response is not None
    assert response.status == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert "The request did not complete within its 2 s deadline." in page.content()


def test_closing_the_preemptive_draw_tab_stops_it(context: BrowserContext, demo: Demo) -> None:

    panel = open_panel(context, demo)
    shop = context.new_page()
    shop.goto(f"{demo.url}/legacy")
    shop.click('a[href="/legacy/draw-preemptive"]')
    demo.wait_for_line(r"demo_app\.legacy: preemptive draw: round 1 of 5")
    close_tab_opened_by(context, shop)
    line = demo.wait_for_line(r"demo_app\.legacy: preemptive draw: drew \d of 5 rounds")
    assert int(re.search(r"drew (\d)", line).group(1)) < 5  # type: ignore[union-attr]
    expect_newest_row(panel, "/legacy/draw-preemptive", "cancelled", CANCELLED)


def test_closing_the_ticker_tab_stops_the_ticker(context: BrowserContext, demo: Demo) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(f"{demo.url}/ticker")
    expect(page.locator("#draws li", has_text="draw 2:")).to_have_count(1)
    page.close()
    demo.wait_for_line(r"demo_app\.ticker: ticker stopped after draw \d+: client disconnected")


def test_leaving_the_ticker_page_stops_the_ticker(context: BrowserContext, demo: Demo) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(f"{demo.url}/ticker")
    expect(page.locator("#draws li", has_text="draw 2:")).to_have_count(1)
    page.click('a[href="/"]')  # the index, whose panel then shows how the ticker ended
    demo.wait_for_line(r"demo_app\.ticker: ticker stopped after draw \d+: client disconnected")
    expect_newest_row(page, "/ticker/draws", "cancelled", r"WEBSOCKET /ticker/draws.*cancelled")
