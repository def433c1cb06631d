"""Run Debian's HAProxy (``mode http``) in front of an upstream on 127.0.0.1, in a tmp dir.

HAProxy runs in the foreground (``-db``) on a listening socket the caller bound and passes in
(``bind fd@N``), so the port is known before it starts. It logs each request in the common
shape (:mod:`tests.proxy.front`) as raw syslog datagrams to the feed: ``status=%ST term=%ts``,
where ``%ts`` is HAProxy's two-letter termination state ("CD": the client aborted during the
data phase; "sH": the server timeout struck before the response headers), then the request line.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.proxy.front import Column, Front, LogFeed, run
from tests.serve import listening

BINARY = "/usr/sbin/haproxy"
PACKAGE = "haproxy"

COLUMNS = (
    Column("haproxy-default", "haproxy", ("mode http",)),
    Column("haproxy-server-close", "haproxy", ("mode http", "option http-server-close")),
    Column("haproxy-abortonclose", "haproxy", ("mode http", "option abortonclose")),
    Column(
        "haproxy-abortonclose-reuse-always",
        "haproxy",
        ("mode http", "option abortonclose", "http-reuse always"),
    ),
)

LOG_FORMAT = 'status=%ST term=%ts time=%Ta backend_conn=%bc/%bq \\"%HM %HU %HV\\"'

CONFIG = """\
global
    log 127.0.0.1:{syslog} format raw local0 info

defaults
    log global
    timeout connect 5s
    timeout client 30s
    timeout server {timeout}ms
    timeout http-keep-alive 30s
{settings}

frontend fe
    bind fd@{fd}
    log-format "{log_format}"
    default_backend app

backend app
    server app 127.0.0.1:{upstream}
"""


def installed() -> bool:
    return Path(BINARY).exists()


def version() -> str:
    result = subprocess.run([BINARY, "-v"], capture_output=True, text=True, check=True)
    match = re.search(r"version (\S+)", result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


@contextmanager
def running(column: Column, upstream_port: int, directory: Path) -> Iterator[Front]:
    listener = listening()
    feed = LogFeed("haproxy")
    settings = "\n".join(f"    {line}" for line in column.settings)
    conf = directory / "haproxy.cfg"
    conf.write_text(
        CONFIG.format(
            syslog=feed.port,
            timeout=round(column.timeout * 1000),
            settings=settings,
            fd=listener.fileno(),
            log_format=LOG_FORMAT,
            upstream=upstream_port,
        )
    )
    argv = [BINARY, "-db", "-f", str(conf)]
    try:
        with run(
            column, argv, directory, listener.getsockname()[1], feed, pass_fds=[listener.fileno()]
        ) as front:
            yield front
    finally:
        listener.close()
