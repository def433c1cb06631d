"""Every proxy of the "Behind a proxy" table, its columns, and where their cells are recorded.

Each proxy module (nginx's HTTP/2 front, HAProxy, Apache httpd, Caddy, Varnish, h2o) has
``BINARY``, ``PACKAGE``, ``COLUMNS``, ``installed()``, ``version()`` and ``running(column,
upstream_port, directory)``.
Each cell appends one JSON line (the format of :mod:`tests.matrix.records`) to
``$ABORT_PROXY_DIR/<column>.jsonl``, ``build/proxies/`` by default: a directory of its own, so
that these columns stay out of the server matrix's table.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from tests import ROOT
from tests.proxy import apache, caddy, h2o, haproxy, nginx_h2, varnish
from tests.proxy.front import MISSING, Column, Front
from tests.support import missing

PROXIES: dict[str, ModuleType] = {
    # nginx's HTTP/1.1 columns are tests/test_nginx.py's; its HTTP/2 one is here.
    "nginx": nginx_h2,
    "haproxy": haproxy,
    "apache": apache,
    "caddy": caddy,
    "varnish": varnish,
    "h2o": h2o,
}
COLUMNS: tuple[Column, ...] = tuple(
    column for module in PROXIES.values() for column in module.COLUMNS
)
BY_NAME = {column.name: column for column in COLUMNS}
#: The HTTP/2 columns, which a browser reaches too (``tests/servers/test_browser_h2.py``).
HTTP2_COLUMNS = tuple(column for column in COLUMNS if column.http2)
DIR_ENV = "ABORT_PROXY_DIR"
#: The records of the browser's cells behind a column: ``chromium-nginx-h2``.
BROWSER_COLUMN = "chromium-{column}"


def results_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or ROOT / "build" / "proxies")


def require(column: Column, tests: str) -> None:
    """Skip ``tests`` (fail them under CI) when ``column``'s proxy is not installed."""
    module = PROXIES[column.proxy]
    if module.installed():
        return
    reason = MISSING.format(proxy=column.proxy, package=module.PACKAGE, binary=module.BINARY)
    missing(reason, tests)


@contextmanager
def running_column(
    column: Column, upstream_port: int, directory: Path, tests: str, records: str
) -> Iterator[Front]:
    """``column``'s proxy, running in ``directory`` in front of the upstream, for one run of its
    cells, whose records (``records``, a file name without ``.jsonl``) start afresh.

    Skips ``tests`` (fails them under CI) when the proxy is not installed.
    """
    require(column, tests)
    results = results_dir()
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{records}.jsonl").write_text("")
    with PROXIES[column.proxy].running(column, upstream_port, directory) as front:
        yield front


def versions(column: Column) -> dict[str, str]:
    """What a cell of ``column`` ran on: the proxy's version, and the upstream's packages."""
    packages = ("fastapi-abort", "fastapi", "starlette", "uvicorn", "httptools", "uvloop")
    found = {name: importlib.metadata.version(name) for name in packages}
    found[column.proxy] = PROXIES[column.proxy].version()
    found["python"] = platform.python_version()
    return found
