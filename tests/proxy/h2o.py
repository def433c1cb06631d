"""Run Debian's h2o as an HTTP/2 front end: TLS and HTTP/2 to the client, HTTP/1.1 upstream.

h2o (``proxy.reverse.url``) terminates TLS with the test's certificate (:mod:`tests.proxy.tls`),
offering ``h2`` and ``http/1.1`` by ALPN. Like nginx, it does not bind its port itself: it
inherits a listening socket the caller bound, through ``SERVER_STARTER_PORT``
(``127.0.0.1:PORT=FD``, the variable of Server::Starter, which h2o reads at start,
``lib/common/serverutil.c``), so the port is known before it starts. It runs in the foreground
(its default ``worker`` mode) with one thread, and writes its error lines and, through
``/dev/stderr``, its access lines to its stderr, which the :class:`tests.proxy.front.LogFeed`
follows: the access line in the common shape (``status=N "GET /path HTTP/2.0" ...``; h2o itself
writes ``HTTP/2``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.proxy.front import Column, Front, LogFeed, run
from tests.proxy.tls import self_signed
from tests.serve import listening

BINARY = "/usr/bin/h2o"
PACKAGE = "h2o"
#: h2o's own timeout for each read from and write to the upstream, in milliseconds.
IO_TIMEOUT_MS = 3000

COLUMNS = (
    Column(
        "h2o-h2",
        "h2o",
        (
            "listen: {port: PORT, ssl: {certificate-file: cert.pem, key-file: key.pem}}",
            "proxy.reverse.url: http://app/",
            f"proxy.timeout.io: {IO_TIMEOUT_MS}",
        ),
        IO_TIMEOUT_MS / 1000,
        http2=True,
    ),
)

#: ``%{connection-id}x``: h2o's id of the client connection (nginx's ``$connection``);
#: ``%{error}x``: the request's own errors (the proxy's ``I/O timeout``), ``-`` for none.
LOG_FORMAT = (
    'status=%s "%m %U%q %H" connection=%{connection-id}x stream=%{http2.stream-id}x '
    "upstream_status=%<s duration=%{duration}x error=%{error}x"
)

CONFIG = """\
{user}
pid-file: {dir}/h2o.pid
num-threads: 1
error-log: /dev/stderr
access-log:
  path: /dev/stderr
  format: '{log_format}'
listen:
  host: 127.0.0.1
  port: {port}
  ssl:
    certificate-file: {cert}
    key-file: {key}
    # No OCSP stapling: h2o would run its fetch-ocsp-response, which goes to the network.
    ocsp-update-interval: 0
    # No separate process for the private key's operations: one process, which stop() ends.
    neverbleed: OFF
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:{upstream}/
        proxy.timeout.io: {timeout}
"""


def shape(line: str) -> str:
    """The line as h2o wrote it, with HTTP/2 spelled as in the common shape."""
    return line.replace(' HTTP/2" ', ' HTTP/2.0" ')


def installed() -> bool:
    return Path(BINARY).exists()


def version() -> str:
    """``2.2.5``, from ``h2o --version``."""
    result = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"h2o version (\S+)", result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


@contextmanager
def running(column: Column, upstream_port: int, directory: Path) -> Iterator[Front]:
    listener = listening()
    port = listener.getsockname()[1]
    feed = LogFeed("h2o", shape)
    certificate = self_signed(directory)
    conf = directory / "h2o.conf"
    conf.write_text(
        CONFIG.format(
            # As root, h2o switches to "nobody" unless told otherwise (src/main.c), who cannot
            # write its pid file into the tmp dir.
            user="user: root" if os.geteuid() == 0 else "",
            dir=directory,
            log_format=LOG_FORMAT,
            port=port,
            cert=certificate.cert,
            key=certificate.key,
            upstream=upstream_port,
            timeout=IO_TIMEOUT_MS,
        )
    )
    try:
        with run(
            column,
            [BINARY, "-c", str(conf)],
            directory,
            port,
            feed,
            follow_stderr=True,
            pass_fds=[listener.fileno()],
            env={"SERVER_STARTER_PORT": f"127.0.0.1:{port}={listener.fileno()}"},
            certificate=certificate,
        ) as front:
            yield front
    finally:
        listener.close()
