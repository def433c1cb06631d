"""docs/databases.md says what the committed run measured, for every way the tests serve."""

from __future__ import annotations

import json
import re
from typing import Any

from tests import EXAMPLES, ROOT
from tests.databases import page
from tests.databases.test_postgres import WAYS

RESULTS = ROOT / "tests" / "databases" / "results-1000.jsonl"


def records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in RESULTS.read_text().splitlines() if line]


def test_the_page_renders_the_committed_results() -> None:
    text = page.PAGE.read_text()
    assert page.render(records(), text) == text


def test_the_table_has_a_row_for_every_way_the_tests_serve() -> None:
    assert list(page.WAYS) == list(WAYS)
    assert {r["way"] for r in records()} == set(WAYS)


def test_the_documented_run_had_1000_aborts_and_no_failure() -> None:
    mixed = [r for r in records() if r["test"] == "mixed"]
    assert len(mixed) == len(WAYS)
    assert all(r["aborts"] >= 1000 and r["normal_failed"] == 0 for r in mixed)


def test_the_endpoint_code_in_the_table_is_in_the_examples() -> None:
    """The tool each row names, and the errors it translates, are the example's."""
    examples = EXAMPLES
    for way, (example, _) in WAYS.items():
        source = (examples / f"{example}.py").read_text()
        code = page.WAYS[way][1]
        tool = re.search(r"ct\.\w+\(", code)
        assert tool is not None, code
        assert tool.group() in source, (way, tool.group())
        for translate in re.findall(r"translate=\(\w+,\)", code):
            assert translate in source, (way, translate)
