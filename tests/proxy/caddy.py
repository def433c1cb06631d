"""Run Debian's Caddy (``reverse_proxy``, Go's HTTP stack) in front of an upstream, in a tmp dir.

Caddy binds its own port (a free one, taken a moment before), with no admin endpoint, no
automatic HTTPS, and its data and config directories in the tmp dir; the HTTP/2 column
serves TLS with the test's certificate (:mod:`tests.proxy.tls`), HTTP/1.1 and HTTP/2 by ALPN.
Its logs (JSON, one object a line) come on its stderr; each is turned into the common shape of
:mod:`tests.proxy.front`: an access line ``status=N duration=S "METHOD /path HTTP/1.1"
connection=IP:PORT`` (the client's address: its connection), or ``[level] logger: msg: error``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.proxy.front import Column, Front, LogFeed, run
from tests.proxy.tls import self_signed
from tests.serve import free_port

BINARY = "/usr/bin/caddy"
PACKAGE = "caddy"

COLUMNS = (
    Column("caddy-default", "caddy", ("reverse_proxy app",)),
    Column("caddy-flush", "caddy", ("reverse_proxy app", "flush_interval -1")),
    Column(
        "caddy-h2",
        "caddy",
        ("https://127.0.0.1:PORT", "tls cert.pem key.pem", "reverse_proxy app"),
        http2=True,
    ),
)

CONFIG = """\
{{
    admin off
    auto_https off
    servers {{
        protocols h1 h2
    }}
    log {{
        output stderr
        format json
        level INFO
    }}
}}

{site}:{port} {{
    bind 127.0.0.1
{tls}
    log {{
        output stderr
        format json
    }}
    reverse_proxy 127.0.0.1:{upstream} {{
{settings}
        transport http {{
            response_header_timeout {timeout}ms
        }}
    }}
}}
"""


def shape(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    request = entry.get("request")
    if entry.get("logger", "").startswith("http.log.access") and request:
        return (
            f"status={entry.get('status')} duration={entry.get('duration')} "
            f'"{request["method"]} {request["uri"]} {request["proto"]}" '
            f"connection={request.get('remote_ip')}:{request.get('remote_port')}"
        )
    uri = f' "{request["method"]} {request["uri"]}"' if request else ""
    error = f": {entry['error']}" if "error" in entry else ""
    return f"[{entry.get('level')}] {entry.get('logger')}: {entry.get('msg')}{error}{uri}"


def installed() -> bool:
    return Path(BINARY).exists()


def version() -> str:
    result = subprocess.run([BINARY, "version"], capture_output=True, text=True, check=True)
    match = re.search(r"v?(\d+\.\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


@contextmanager
def running(column: Column, upstream_port: int, directory: Path) -> Iterator[Front]:
    feed = LogFeed("caddy", shape)
    port = free_port()
    extra = [line for line in column.settings if line.startswith("flush_interval")]
    # An HTTP/2 column: TLS with the test's certificate (HTTP/2 is offered by ALPN).
    certificate = self_signed(directory) if column.http2 else None
    tls = "" if certificate is None else f"    tls {certificate.cert} {certificate.key}"
    conf = directory / "Caddyfile"
    conf.write_text(
        CONFIG.format(
            site="http://" if certificate is None else "https://127.0.0.1",
            tls=tls,
            port=port,
            upstream=upstream_port,
            settings="\n".join(" " * 8 + line for line in extra),
            timeout=round(column.timeout * 1000),
        )
    )
    argv = [BINARY, "run", "--config", str(conf), "--adapter", "caddyfile"]
    env_dirs = {"XDG_DATA_HOME": directory / "data", "XDG_CONFIG_HOME": directory / "config"}
    with run(
        column,
        argv,
        directory,
        port,
        feed,
        follow_stderr=True,
        env=env_dirs,
        certificate=certificate,
    ) as front:
        yield front
