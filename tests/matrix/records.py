"""The records a matrix run leaves, one JSON object per cell run, and reading them back.

``$ABORT_MATRIX_DIR/<column>.jsonl`` (``build/matrix/`` under the repository by default), one
line per run of a cell: ``column``, ``scenario``, ``trips`` (bool), ``delay_ms`` (float or
null), ``note`` (str) and ``versions`` (package -> version of that column's server stack). Other
tools may write columns of their own there in the same format; the page shows them too. When a
cell ran several times, its last line wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests import ROOT

DIR_ENV = "ABORT_MATRIX_DIR"

Record = dict[str, Any]


def results_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or ROOT / "build" / "matrix")


def append(
    column: str,
    scenario: str,
    trips: bool,
    delay_ms: float | None,
    note: str,
    versions: dict[str, str],
    directory: Path | None = None,
) -> None:
    directory = results_dir() if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "column": column,
        "scenario": scenario,
        "trips": trips,
        "delay_ms": delay_ms,
        "note": note,
        "versions": versions,
    }
    with (directory / f"{column}.jsonl").open("a") as out:
        out.write(json.dumps(record) + "\n")


def load(directory: Path) -> dict[str, dict[str, Record]]:
    """column -> scenario -> the last record of that cell, for every ``*.jsonl`` file."""
    table: dict[str, dict[str, Record]] = {}
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                record: Record = json.loads(line)
                table.setdefault(record["column"], {})[record["scenario"]] = record
    return table
