"""The upstream every proxy test puts its proxy in front of: one uvicorn per test module.

uvicorn (httptools, uvloop) runs :mod:`tests.proxy.app`; the test reaches it directly (not
through the proxy) on one client connection of its own, to wait for the app's events through
its long-poll and to ask when uvicorn saw an upstream connection open and close.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.serve import Options, Served, running

#: uvicorn's idle keep-alive timeout behind a proxy, above the proxies' own idle timeouts for
#: upstream connections (nginx's ``keepalive_timeout``, 60 s by default), so that the proxy,
#: not uvicorn, closes idle upstream connections: uvicorn closing one just as the proxy reuses
#: it fails that request.
UPSTREAM_KEEP_ALIVE = 75


@dataclass
class Upstream(Served):
    """uvicorn running ``tests.proxy.app``, reached directly, on one client connection."""

    client: httpx.Client

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params).json()

    def connection(self, port: int, what: str, timeout: float = 15.0) -> dict[str, bool]:
        """Whether uvicorn saw the connection from ``port`` open and close, once ``what`` did."""
        result: dict[str, bool] = self.get(f"/connection/{port}/{what}", timeout=timeout)
        return result

    def release(self, rid: str) -> None:
        self.client.post(f"/release/{rid}").raise_for_status()


@contextmanager
def serving(log: Path) -> Iterator[Upstream]:
    """uvicorn with :mod:`tests.proxy.app`, its output in ``log``; on exit, asserts it logged
    nothing above INFO in its whole life."""
    options = Options(http="tests.proxy.app:TrackedProtocol", keep_alive=UPSTREAM_KEEP_ALIVE)
    with running("uvicorn-httptools", log, "tests.proxy.app:app", options) as served:
        url = f"http://127.0.0.1:{served.port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            yield Upstream(served.kind, served.port, served.pid, served.log, client)
    assert not served.noisy(), served.output()
