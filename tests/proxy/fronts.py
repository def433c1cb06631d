"""Every proxy of the "Behind a proxy" table, its columns, and where their cells are recorded.

Each proxy module (nginx's HTTP/2 front, HAProxy, Apache httpd, Caddy, Varnish) has ``BINARY``,
``PACKAGE``, ``COLUMNS``, ``installed()``, ``version()`` and ``running(column, upstream_port,
directory)``.
Each cell appends one JSON line (the format of :mod:`tests.matrix.records`) to
``$ABORT_PROXY_DIR/<column>.jsonl``, ``build/proxies/`` by default: a directory of its own, so
that these columns stay out of the server matrix's table.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from tests import ROOT
from tests.proxy import apache, caddy, haproxy, nginx_h2, varnish
from tests.proxy.front import Column

PROXIES: dict[str, ModuleType] = {
    # nginx's HTTP/1.1 columns are tests/test_nginx.py's; its HTTP/2 one is here.
    "nginx": nginx_h2,
    "haproxy": haproxy,
    "apache": apache,
    "caddy": caddy,
    "varnish": varnish,
}
COLUMNS: tuple[Column, ...] = tuple(
    column for module in PROXIES.values() for column in module.COLUMNS
)
BY_NAME = {column.name: column for column in COLUMNS}
DIR_ENV = "ABORT_PROXY_DIR"


def results_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or ROOT / "build" / "proxies")
