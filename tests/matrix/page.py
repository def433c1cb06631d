"""Render ``docs/servers.md`` from a matrix run's records and the expected table.

``python -m tests.matrix.page [RESULTS_DIR]`` (``$ABORT_MATRIX_DIR``, or ``build/matrix/``, by
default) after ``python -m pytest tests/test_matrix.py``. Columns found in the records that the
expected table does not know (the nginx ones) are rendered too, from their records alone.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

from tests import ROOT
from tests.matrix.expected import EXPECTED, Expected
from tests.matrix.records import Record, load, results_dir
from tests.matrix.scenarios import SCENARIOS
from tests.matrix.servers import BY_NAME, COLUMNS

PAGE = ROOT / "docs" / "servers.md"
NGINX = "nginx-"

TITLES = {
    "close_before_response": "Client closes before the response starts",
    "rst": "Client resets the connection (RST)",
    "half_close": "Client half-closes (`shutdown(SHUT_WR)`)",
    "leave_mid_stream": "Client leaves a streaming (SSE) response",
    "keepalive_complete": "Completed responses on a kept-alive connection",
    "upload_then_leave": "Upload read whole, then the client leaves",
    "unread_body": "Large body the endpoint never reads, client leaves",
    "pipelined": "Pipelined request queued behind a held one, client leaves",
    "expect_continue": "`Expect: 100-continue`, body sent, client leaves",
    "graceful_shutdown": "Server shuts down gracefully, request in flight",
    "def_endpoint": "`def` endpoint (worker thread)",
    "base_http_middleware_inside": "`BaseHTTPMiddleware` inside ours (`install()`)",
    "base_http_middleware_outside": "`BaseHTTPMiddleware` outside ours (added by hand)",
    "is_disconnected_and_streaming": "`Request.is_disconnected()` + `StreamingResponse`",
    "h2_stream_reset": "HTTP/2 stream reset (`RST_STREAM`), sibling completes",
}
SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")

INTRO = """\
# Servers and proxies

Does a client that leaves reach your code? It depends on the server, on how it is run, and on
how the client leaves. Each column below is one server configuration, started for real on
127.0.0.1; each row is one way a client leaves (or does not). Every cell is a test
(`tests/test_matrix.py`) that asserts the result in this table, so the table cannot drift from
what the servers do.

* **trips, N ms**: the request's token was cancelled, N ms after the client closed its socket
  (the client's `time.monotonic_ns()` just before `close()`, against the server's at the token's
  callback: one clock on one machine). Most of it is the 1 ms `watcher_delay`: the client left
  just after the endpoint asked for its token. The first row is each server's first request, and
  carries its warm-up. One run's figures, not a benchmark.
* **never (correct)**: the token must not trip here, and did not.
* **✗ limitation**: the client left, and the token did not trip within the endpoint's 3 s hold.
  The reason, read in the server's source, and a workaround are below.
* **n/a**: does not apply to this protocol.

No server configuration here hides every disconnect: each reports a client that closes, resets
or half-closes its connection. The limits are particular cases, and whether one happens depends
on the client (does it pipeline? does it leave while the app has not read its body?), which the
app cannot know in advance. So fastapi-abort logs no warning at start-up for any server: one
would fire on nearly every deployment and be wrong nearly every time. The limits are listed
below instead, each with its workaround.

Regenerate it: `python -m pytest tests/test_matrix.py` records every cell under
`$ABORT_MATRIX_DIR` (`build/matrix/` by default), then `python -m tests.matrix.page` writes this
page. A test checks that the words on this page match `tests/matrix/expected.py`.
"""


def word(expected: Expected) -> str:
    """The word a cell of a known column shows, without its figure or footnote."""
    return {"trips": "trips", "never": "never", "limitation": "✗ limitation", "n/a": "n/a"}[
        expected.outcome
    ]


def cell_word(text: str) -> str:
    """The word of a rendered cell: ``trips, 0.4 ms`` is ``trips``."""
    text = text.strip().rstrip("⁰¹²³⁴⁵⁶⁷⁸⁹")
    if text.startswith("trips"):
        return "trips"
    if text.startswith("never"):
        return "never"
    return text


def _limitations() -> list[Expected]:
    found: list[Expected] = []
    for column in COLUMNS:
        for scenario in SCENARIOS:
            expected = EXPECTED[column.name][scenario]
            if expected.outcome == "limitation" and expected not in found:
                found.append(expected)
    return found


def _known_cell(expected: Expected, record: Record | None, footnotes: list[Expected]) -> str:
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
    mark = str(footnotes.index(expected) + 1).translate(SUPERSCRIPTS)
    return f"✗ limitation{mark}"


def _other_cell(record: Record | None) -> str:
    if record is None:
        return "not run"
    if record["trips"]:
        return f"trips, {record['delay_ms']:.1f} ms"
    return "no trip"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(results: dict[str, dict[str, Record]]) -> list[str]:
    footnotes = _limitations()
    others = sorted(name for name in results if name not in BY_NAME)
    head = ["", *(column.title for column in COLUMNS), *others]
    lines = [_row(head), _row(["---"] * len(head))]
    for scenario in SCENARIOS:
        cells = [TITLES[scenario]]
        for column in COLUMNS:
            record = results.get(column.name, {}).get(scenario)
            cells.append(_known_cell(EXPECTED[column.name][scenario], record, footnotes))
        cells.extend(_other_cell(results[name].get(scenario)) for name in others)
        lines.append(_row(cells))
    return lines


def _versions(results: dict[str, dict[str, Record]]) -> list[str]:
    lines = ["| Column | How it was run | Versions |", "| --- | --- | --- |"]
    for name in [column.name for column in COLUMNS] + sorted(set(results) - set(BY_NAME)):
        versions: dict[str, str] = {}
        for record in results.get(name, {}).values():
            versions.update(record["versions"])
        pinned = ", ".join(f"{package} {version}" for package, version in versions.items())
        column = BY_NAME.get(name)
        title, how = (column.title, column.settings) if column else (name, "see below")
        lines.append(_row([title, how, pinned or "not run"]))
    return lines


def _limitation_notes() -> list[str]:
    lines: list[str] = []
    for number, expected in enumerate(_limitations(), start=1):
        where = [
            f"{column.title} ({scenario.replace('_', ' ')})"
            for column in COLUMNS
            for scenario in SCENARIOS
            if EXPECTED[column.name][scenario] is expected
        ]
        lines += [
            f"{number}. **{', '.join(where)}.** {expected.why}",
            "",
            f"    Workaround: {expected.workaround}",
            "",
        ]
    return lines


def _never_notes() -> list[str]:
    lines: list[str] = []
    seen: list[Expected] = []
    for scenario in SCENARIOS:
        for column in COLUMNS:
            expected = EXPECTED[column.name][scenario]
            if expected.outcome in ("never", "n/a") and expected not in seen:
                seen.append(expected)
                lines += [f"* **{TITLES[scenario]}** ({word(expected)}): {expected.why}", ""]
    return lines


def _shutdown_notes(results: dict[str, dict[str, Record]]) -> list[str]:
    lines = []
    for column in COLUMNS:
        record = results.get(column.name, {}).get("graceful_shutdown")
        if record is not None:
            lines.append(f"* {column.title}: {record['note']}.")
    return lines


def _log_notes() -> list[str]:
    lines = []
    for column in COLUMNS:
        for known in column.known_log:
            lines.append(f"* {column.title}: {known.why}")
    return lines


def _nginx(results: dict[str, dict[str, Record]]) -> list[str]:
    names = sorted(name for name in results if name.startswith(NGINX))
    if not names:
        return ["No nginx columns in this run's records."]
    lines = [
        "The nginx columns put Debian's nginx in front of uvicorn (httptools + uvloop), with "
        "`proxy_ignore_client_abort off`, nginx's default: when the client goes, nginx closes "
        "its upstream connection, and the app sees that as the client leaving.",
        "",
    ]
    by_scenario = {
        scenario: {
            name: results[name][scenario]["trips"] for name in names if scenario in results[name]
        }
        for scenario in SCENARIOS
    }
    differ = [scenario for scenario, trips in by_scenario.items() if len(set(trips.values())) > 1]
    delays = [
        record["delay_ms"]
        for name in names
        for record in results[name].values()
        if record["trips"] and record["delay_ms"] is not None
    ]
    if differ:
        lines.append(
            "The settings change the outcome of: "
            + ", ".join(TITLES[scenario] for scenario in differ)
            + "."
        )
    else:
        lines.append(
            f"Upstream keepalive and `proxy_buffering`, on or off, gave the same outcome in every "
            f"row measured ({', '.join(names)}): use whichever your deployment needs."
        )
    if delays:
        lines.append(
            f"The median detection delay through nginx was {statistics.median(delays):.1f} ms "
            f"({len(delays)} cells that tripped)."
        )
    lines += [
        "",
        "Recommended settings:",
        "",
        "```nginx",
        "location / {",
        "    proxy_pass http://app;",
    ]
    lines += [
        "    # The default: a client that leaves closes the upstream connection too.",
        "    proxy_ignore_client_abort off;",
        "    # Keepalive to the upstream and buffering: on or off, both measured above.",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "}",
        "```",
        "",
        "What nginx logged, per cell:",
        "",
    ]
    for name in names:
        for scenario in SCENARIOS:
            record = results[name].get(scenario)
            if record is not None and record["note"]:
                lines.append(f"* {name}, {scenario.replace('_', ' ')}: {record['note']}")
    return lines


def render(results: dict[str, dict[str, Record]]) -> str:
    lines = [INTRO, "## The matrix", "", *table(results), ""]
    lines += ["## Limitations", "", *_limitation_notes()]
    lines += ["## Why some cells never trip", "", *_never_notes()]
    lines += ["## Graceful shutdown, measured", "", *_shutdown_notes(results), ""]
    lines += ["## What the servers log", "", "Nothing at ERROR, except:", "", *_log_notes(), ""]
    lines += ["## Columns and versions", "", *_versions(results), ""]
    lines += ["## Behind nginx", "", *_nginx(results), ""]
    return "\n".join(lines)


def page_words(text: str) -> dict[tuple[str, str], str]:
    """(column title, row title) -> the word of that cell, from a rendered page's table."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]
    head = cells[0]
    words: dict[tuple[str, str], str] = {}
    for row in cells[2:]:
        if row[0] not in TITLES.values():
            break
        for title, text_ in zip(head[1:], row[1:], strict=True):
            words[(title, row[0])] = cell_word(text_)
    return words


def main(argv: list[str]) -> None:
    directory = Path(argv[0]) if argv else results_dir()
    PAGE.write_text(re.sub(r"\n{3,}", "\n\n", render(load(directory))).rstrip() + "\n")
    print(f"wrote {PAGE.relative_to(ROOT)} from {directory}")


if __name__ == "__main__":
    main(sys.argv[1:])
