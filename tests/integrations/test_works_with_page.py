"""``docs/works-with.md`` shows, in its Observability section, the tables that
:mod:`tests.integrations.works_with` renders from the values the integration tests assert."""

from __future__ import annotations

from tests import ROOT
from tests.integrations import works_with

PAGE = ROOT / "docs" / "works-with.md"
SECTION = "## Observability"
NEXT = "## Streaming and middleware"


def test_the_observability_tables_are_the_tested_values() -> None:
    text = PAGE.read_text()
    section = text[text.index(SECTION) : text.index(NEXT)]
    assert works_with.markdown() in section
    tables = [line for line in section.splitlines() if line.startswith("|")]
    rendered = [line for line in works_with.markdown().splitlines() if line.startswith("|")]
    assert tables == rendered
