"""Run Debian's nginx as an HTTP/2 front end: TLS and HTTP/2 to the client, HTTP/1.1 upstream.

A proxy of :mod:`tests.proxy.fronts` (``tests/test_proxies.py``), unlike the HTTP/1.1 columns of
:mod:`tests.proxy.nginx` (``tests/test_nginx.py``, the server matrix's nginx section). nginx
terminates TLS with a certificate the test makes (:mod:`tests.proxy.tls`) and inherits its
listening socket as in :mod:`tests.proxy.nginx` (the ``NGINX`` variable). Its access and error
lines come as syslog datagrams to the :class:`tests.proxy.front.LogFeed`, the access line in the
common shape (``status=N "GET /path HTTP/2.0" ...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.proxy.front import Column, Front, LogFeed, run
from tests.proxy.nginx import NGINX_BINARY, nginx_installed, nginx_version, render, shape
from tests.proxy.tls import self_signed
from tests.serve import listening

BINARY = NGINX_BINARY
PACKAGE = "nginx"
#: nginx's own timeout for the upstream's response, in seconds: the timeout row.
READ_TIMEOUT = 3

COLUMNS = (
    Column(
        "nginx-h2",
        "nginx",
        ("listen ... ssl http2;", "proxy_pass http://app;", f"proxy_read_timeout {READ_TIMEOUT}s;"),
        float(READ_TIMEOUT),
        http2=True,
    ),
)

LOG_FORMAT = (
    'status=$status "$request" connection=$connection/$connection_requests '
    "upstream=$upstream_addr upstream_status=$upstream_status request_time=$request_time "
    "completion=$request_completion"
)


def installed() -> bool:
    return nginx_installed()


def version() -> str:
    return nginx_version()


@contextmanager
def running(column: Column, upstream_port: int, directory: Path) -> Iterator[Front]:
    listener = listening()
    port = listener.getsockname()[1]
    feed = LogFeed("nginx", shape)
    certificate = self_signed(directory)
    conf = directory / "nginx.conf"
    conf.write_text(
        render(
            directory,
            port,
            feed.port,
            LOG_FORMAT,
            upstream=[f"server 127.0.0.1:{upstream_port};"],
            location=["proxy_pass http://app;", f"proxy_read_timeout {READ_TIMEOUT}s;"],
            listen_options=" ssl http2",
            server=(
                f"ssl_certificate {certificate.cert};",
                f"ssl_certificate_key {certificate.key};",
            ),
        )
    )
    argv = [NGINX_BINARY, "-p", str(directory), "-c", str(conf), "-e", str(directory / "err.log")]
    try:
        with run(
            column,
            argv,
            directory,
            port,
            feed,
            pass_fds=[listener.fileno()],
            # nginx's own variable for inherited listening sockets: "fd;fd;...".
            env={"NGINX": f"{listener.fileno()};"},
            certificate=certificate,
        ) as front:
            yield front
    finally:
        listener.close()
