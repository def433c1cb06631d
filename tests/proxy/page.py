"""Render the "Behind a proxy" section of ``docs/servers.md`` from the proxy cells' records.

``python -m tests.proxy.page [RESULTS_DIR]`` (``$ABORT_PROXY_DIR``, or ``build/proxies/``, by
default) after ``python -m pytest tests/test_proxies.py tests/servers/test_browser_h2.py``. The
section is the page's last: this replaces it (or appends it), leaving the rest of the page as
``python -m tests.matrix.page`` wrote it; run this after that one, which rewrites the whole page.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from tests.matrix.expected import Expected
from tests.matrix.page import PAGE, SUPERSCRIPTS, word
from tests.matrix.records import Record, load
from tests.proxy.expected import EXPECTED, SCENARIOS
from tests.proxy.fronts import BROWSER_COLUMN, COLUMNS, HTTP2_COLUMNS, results_dir

HEADING = "## Behind a proxy"
TITLES = {
    "close_before_response": "Client closes before the response starts",
    "rst": "Client resets the connection (RST)",
    "leave_mid_stream": "Client leaves a streaming (SSE) response",
    "upload_then_leave": "Upload read whole, then the client leaves",
    "keepalive_complete": "Completed responses on a kept-alive connection",
    "proxy_timeout": "The proxy's own timeout for the response (3 s)",
    "rst_stream": "HTTP/2: one of two streams reset (RST_STREAM), its sibling completes",
}
#: The rows of the browser's table: how the closed tab had its request in flight
#: (``tests/servers/test_browser_h2.py`` runs one test per key).
BROWSER_TITLES = {
    "close_tab_loading": "A tab still loading a slow page is closed",
    "close_tab_fetching": "A tab whose page's fetch() is in flight is closed",
}

INTRO = f"""\
{HEADING}

The client talks to a proxy, which talks HTTP/1.1 to uvicorn (httptools + uvloop): does the app
hear that the client left? Only if the proxy closes (or resets) its upstream connection when its
client goes. Each column is one proxy configuration, Debian's package started by
`tests/test_proxies.py` with its own config on 127.0.0.1; each cell is a test that asserts the
result below (`tests/proxy/expected.py`), and the words of this table are checked against it.
Delays as in the matrix above, from the client's `close()`; in the timeout row, from the moment
the client read the proxy's error response (negative: the app heard it first). A cell that does
not trip within 1.5 s is released by the test, so that it ends. nginx's HTTP/1.1 columns have
their own section above.

The `-h2` columns are HTTP/2 front ends, as browsers reach a site: the proxy terminates TLS (a
self-signed certificate the test makes), speaks HTTP/2 to the client (the `h2` package, offered
by ALPN) and HTTP/1.1 to uvicorn. Their client leaves by closing (or resetting) its TCP
connection; the last row is what a browser does when one tab of several on one connection
closes: it sends RST_STREAM for that stream and keeps the connection. The row trips only if the
reset stream's token trips and the sibling stream, held meanwhile on the same connection,
completes without tripping, its upstream connection still open (n/a: HTTP/2 only). The same,
done by a real browser (Chromium) closing a tab, has a table of its own below.

Regenerate it: `python -m pytest tests/test_proxies.py tests/servers/test_browser_h2.py` records
every cell under `$ABORT_PROXY_DIR` (`build/proxies/` by default), then `python -m
tests.proxy.page` rewrites this section (after `python -m tests.matrix.page`, which rewrites the
whole page).
"""

#: What the table means for a deployment, in one line per proxy.
ADVICE = [
    "What to use, from the table:",
    "",
    "* **nginx**: its defaults (see its section above); as an HTTP/2 front end too, where a "
    "stream the client resets closes that request's upstream connection, and only it.",
    "* **HAProxy**: `option abortonclose` (in `defaults` or the backend); without it a client "
    "that leaves before the response is not heard.",
    "* **Caddy**: `reverse_proxy` as it is, over HTTP/1.1 or HTTP/2 (a reset stream cancels "
    "its own upstream request only); do not set `flush_interval -1` (Caddy then "
    "deliberately ignores a client that leaves), SSE is flushed at once anyway.",
    "* **Apache httpd**: no setting makes mod_proxy_http tell the app before the response "
    "starts; streaming responses are heard at their next write.",
    "* **Varnish**: `pass` is not heard before the response starts; `return (pipe)` is, at "
    "the price of caching and one request per connection.",
    "* **h2o** (2.2): `proxy.reverse.url` as it is: a client that leaves, or resets its stream, "
    "closes that request's upstream connection at once, and only it.",
    "* Every proxy's own timeout for the response closes the upstream connection: the token "
    "trips then, with reason `client disconnected` (the app cannot tell the proxy's timeout "
    "from a client that left; the proxy's log can).",
]


def title(scenario: str) -> str:
    return TITLES[scenario]


def _limitations() -> list[Expected]:
    found: list[Expected] = []
    for column in COLUMNS:
        for scenario in SCENARIOS:
            expected = EXPECTED[column.name][scenario]
            if expected.outcome == "limitation" and expected not in found:
                found.append(expected)
    return found


def _cell(expected: Expected, record: Record | None, footnotes: list[Expected]) -> str:
    if expected.outcome == "n/a":
        return "n/a"
    if record is None:
        return "not run"
    if record["trips"] != expected.trips:
        return f"⚠ observed {'trips' if record['trips'] else 'no trip'}, expected {word(expected)}"
    if expected.outcome == "trips":
        return f"trips, {record['delay_ms']:.1f} ms"
    if expected.outcome == "never":
        return "never (correct)"
    return "✗ limitation" + str(footnotes.index(expected) + 1).translate(SUPERSCRIPTS)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(results: dict[str, dict[str, Record]]) -> list[str]:
    footnotes = _limitations()
    head = ["", *(column.name for column in COLUMNS)]
    lines = [_row(head), _row(["---"] * len(head))]
    for scenario in SCENARIOS:
        cells = [TITLES[scenario]]
        for column in COLUMNS:
            record = results.get(column.name, {}).get(scenario)
            cells.append(_cell(EXPECTED[column.name][scenario], record, footnotes))
        lines.append(_row(cells))
    return lines


def _notes() -> list[str]:
    lines: list[str] = []
    for number, expected in enumerate(_limitations(), start=1):
        where = sorted(
            {
                column.name
                for column in COLUMNS
                for scenario in SCENARIOS
                if EXPECTED[column.name][scenario] is expected
            }
        )
        rows = [
            TITLES[scenario]
            for scenario in SCENARIOS
            if any(EXPECTED[name][scenario] is expected for name in where)
        ]
        lines += [
            f"{number}. **{', '.join(where)}** ({'; '.join(rows).lower()}). {expected.why}",
            "",
            f"    What to do: {expected.workaround}",
            "",
        ]
    return lines


def _settings(results: dict[str, dict[str, Record]]) -> list[str]:
    lines = ["| Column | Settings | Versions |", "| --- | --- | --- |"]
    for column in COLUMNS:
        versions: dict[str, str] = {}
        for record in results.get(column.name, {}).values():
            versions.update(record["versions"])
        proxy = versions.get(column.proxy, "not run")
        settings = "; ".join(f"`{line}`" for line in column.settings)
        lines.append(_row([column.name, settings, f"{column.proxy} {proxy}"]))
    return lines


def _delays(results: dict[str, dict[str, Record]]) -> list[str]:
    lines = []
    for proxy in dict.fromkeys(column.proxy for column in COLUMNS):
        delays = [
            record["delay_ms"]
            for column in COLUMNS
            if column.proxy == proxy
            for scenario, record in results.get(column.name, {}).items()
            if record["trips"] and scenario != "proxy_timeout"
        ]
        if delays:
            lines.append(
                f"* {proxy}: median {statistics.median(delays):.1f} ms, at most "
                f"{max(delays):.1f} ms ({len(delays)} cells that tripped, the timeout row aside)."
            )
    return lines


def _logged(results: dict[str, dict[str, Record]]) -> list[str]:
    lines = []
    for column in COLUMNS:
        for scenario in SCENARIOS:
            record = results.get(column.name, {}).get(scenario)
            if record is not None:
                lines.append(f"* {column.name}, {scenario.replace('_', ' ')}: `{record['note']}`")
    return lines


BROWSER_INTRO = """\
### A real browser closes one tab of two

`tests/servers/test_browser_h2.py` has Debian's Chromium (headless, through playwright) do what
the last row does with the `h2` package: two tabs of one site share one HTTP/2 connection to
the front, each has a request held by the app in flight, and the test closes one tab. Chromium
resets that stream (RST_STREAM) and keeps the connection. Each cell trips only if exactly the
closed tab's token trips (client disconnected) and the other tab's request completes with 200,
untripped, both on one client connection as the front's access log says (checked, not
assumed). Chromium trusts the front's throwaway certificate by its key's pin
(`--ignore-certificate-errors-spki-list`). The delay runs from the test's call to close the tab
(playwright's `page.close()`): it includes Chromium's own time to tear the tab down and send
RST_STREAM, which the `h2` row above does not have, and it varies from run to run far more than
the proxy's part: in eight runs on a loaded 2-core machine (Chromium 156, every cell tripping
every time), a loading tab's token tripped 9 to 67 ms after the close, a fetching tab's 14 to
280 ms (probably because a navigation is the browser process's own request, while a fetch
belongs to the tab's renderer, which goes first; not traced inside Chromium). The table shows
the last run.
"""


def browser_table(results: dict[str, dict[str, Record]]) -> list[str]:
    """The browser's cells: a row per way the tab had its request in flight, a column per
    HTTP/2 front."""
    head = ["", *(column.name for column in HTTP2_COLUMNS)]
    lines = [_row(head), _row(["---"] * len(head))]
    for way, way_title in BROWSER_TITLES.items():
        cells = [way_title]
        for column in HTTP2_COLUMNS:
            record = results.get(BROWSER_COLUMN.format(column=column.name), {}).get(way)
            if record is None:
                cells.append("not run")
            elif record["trips"]:
                cells.append(f"trips, {record['delay_ms']:.1f} ms")
            else:
                cells.append("⚠ observed no trip")
        lines.append(_row(cells))
    return lines


def _browser_logged(results: dict[str, dict[str, Record]]) -> list[str]:
    lines = []
    for column in HTTP2_COLUMNS:
        name = BROWSER_COLUMN.format(column=column.name)
        for way in BROWSER_TITLES:
            record = results.get(name, {}).get(way)
            if record is not None:
                chromium = record["versions"].get("chromium", "")
                lines.append(
                    f"* {name} (Chromium {chromium}), {way.replace('_', ' ')}: `{record['note']}`"
                )
    return lines


def section(results: dict[str, dict[str, Record]]) -> str:
    lines = [INTRO, *table(results), "", *ADVICE, "", BROWSER_INTRO, *browser_table(results)]
    lines += ["", *_browser_logged(results), "", "### Why some cells do not trip", ""]
    lines += _notes()
    lines += [
        "Completed responses never trip: the token is final once the response is complete "
        "(`fastapi_abort/_middleware.py`).",
        "",
    ]
    lines += ["### Detection delay, by proxy", "", *_delays(results), ""]
    lines += ["### Columns, settings and versions", "", *_settings(results), ""]
    lines += [
        "What each access line says: HAProxy's `term` is its termination state (`CH`: the "
        "client aborted while HAProxy waited for the response headers; `CD`: during the data; "
        "`sH`: the server timeout struck before the headers), and it logs status `-1` or `400` "
        "for a request whose client left first; Apache's `conn=X` means the connection was "
        "aborted before the response completed; Caddy logs status `0` for a request its client "
        "left before any response; Varnish logs status `-` for a piped request (it does not "
        "parse the response), and `handling` is `pass` or `pipe`. nginx-h2 logs a reset stream as "
        "499 with `[info] client canceled stream N while sending request to upstream`; Caddy "
        "logs status `0` for it, with no error line; h2o logs status `0` (and upstream status "
        "`0`) for any request whose client left before the response, with no error line, and "
        "its own timeout as a 502 with `error=[lib/core/proxy.c] I/O timeout`. `connection=` "
        "is the client connection: nginx's `$connection`, h2o's `%{connection-id}x`, Caddy's "
        "client address and port.",
        "",
        "### What the proxy logged, per cell",
        "",
        *_logged(results),
        "",
    ]
    return "\n".join(lines)


def section_words(text: str) -> dict[tuple[str, str], str]:
    """(column, row title) -> the word of that cell, from the section's table."""
    start = text.index(HEADING)
    rows = [line for line in text[start:].splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]
    head = cells[0]
    words: dict[tuple[str, str], str] = {}
    for row in cells[2:]:
        if row[0] not in TITLES.values():
            break
        for name, cell in zip(head[1:], row[1:], strict=True):
            cell = cell.rstrip("⁰¹²³⁴⁵⁶⁷⁸⁹")
            words[(name, row[0])] = cell.split(",")[0].split(" (")[0]
    return words


def main(argv: list[str]) -> None:
    directory = Path(argv[0]) if argv else results_dir()
    text = PAGE.read_text()
    if HEADING in text:
        text = text[: text.index(HEADING)]
    PAGE.write_text(text.rstrip() + "\n\n" + section(load(directory)).rstrip() + "\n")
    print(f"wrote the proxy section of {PAGE} from {directory}")


if __name__ == "__main__":
    main(sys.argv[1:])
