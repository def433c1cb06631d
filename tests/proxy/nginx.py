"""Run Debian's nginx in front of an upstream on 127.0.0.1, as the current user, in a tmp dir.

``run_nginx(upstream_port, settings, directory)`` writes a config with every path (pid, logs, temp
files) inside ``directory`` and runs nginx in the foreground (``daemon off``, a master and one
worker, so that a reload can be tested). nginx does not bind its port itself: it inherits a
listening socket the caller bound, through the ``NGINX`` environment variable nginx reads at start
(the one its binary upgrade uses), so the port is known before nginx starts and connections wait
in the backlog until it accepts them. No port race, no readiness polling.

nginx also sends its access and error log lines to a syslog listener on 127.0.0.1 (UDP) that this
module runs, so that a test waits for the line of a request as an event, with a bound, instead of
polling the log files. The files are written too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.proxy.front import LogFeed
from tests.serve import listening

#: Where Debian's package puts it (``apt-get install nginx``).
NGINX_BINARY = "/usr/sbin/nginx"
NGINX_MISSING = (
    "nginx is not installed: the proxy tests need Debian's nginx at /usr/sbin/nginx "
    "(apt-get install nginx)"
)
NGINX_DIED = "nginx exited with code {code} at start; its error log:\n{log}"


@dataclass(frozen=True)
class Settings:
    """One proxy configuration: a column of the results."""

    #: The column's name in the results.
    name: str
    #: An ``upstream`` block with ``keepalive 16``, HTTP/1.1 and no ``Connection: close``.
    upstream_keepalive: bool
    #: ``proxy_buffering`` (of responses).
    buffering: bool
    #: ``proxy_request_buffering`` (of request bodies).
    request_buffering: bool


COLUMNS = (
    Settings("nginx-default", upstream_keepalive=False, buffering=True, request_buffering=True),
    Settings("nginx-keepalive", upstream_keepalive=True, buffering=True, request_buffering=True),
    Settings(
        "nginx-buffering-off", upstream_keepalive=False, buffering=False, request_buffering=False
    ),
    Settings(
        "nginx-keepalive-buffering-off",
        upstream_keepalive=True,
        buffering=False,
        request_buffering=False,
    ),
)

#: Enough to tell requests apart in the log: the request line (which carries the request id),
#: the status, the connection and its request count, what the upstream answered and when.
LOG_FORMAT = (
    '"$request" $status $body_bytes_sent connection=$connection/$connection_requests '
    "upstream=$upstream_addr upstream_status=$upstream_status request_time=$request_time "
    "completion=$request_completion"
)

CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
error_log syslog:server=127.0.0.1:{syslog_port},nohostname info;

events {{
    worker_connections 256;
}}

http {{
    log_format abort '{log_format}';
    access_log {dir}/access.log abort;
    access_log syslog:server=127.0.0.1:{syslog_port},nohostname abort;
    client_body_temp_path {dir}/client_body_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    # The tests upload 1 MiB bodies (the default limit is exactly 1 MiB).
    client_max_body_size 8m;

    upstream app {{
{upstream}
    }}

    server {{
        listen 127.0.0.1:{port}{listen_options};
{server}
        location / {{
{location}
        }}
    }}
}}
"""


def config_text(
    settings: Settings, directory: Path, port: int, upstream_port: int, syslog_port: int
) -> str:
    upstream = [f"server 127.0.0.1:{upstream_port};"]
    location = ["proxy_pass http://app;"]
    if settings.upstream_keepalive:
        upstream.append("keepalive 16;")
        location += ["proxy_http_version 1.1;", 'proxy_set_header Connection "";']
    if not settings.buffering:
        location.append("proxy_buffering off;")
    if not settings.request_buffering:
        location.append("proxy_request_buffering off;")
    return render(directory, port, syslog_port, LOG_FORMAT, upstream, location)


def render(
    directory: Path,
    port: int,
    syslog_port: int,
    log_format: str,
    upstream: list[str],
    location: list[str],
    listen_options: str = "",
    server: tuple[str, ...] = (),
) -> str:
    """:data:`CONFIG` with these lines in its ``upstream``, ``server`` and ``location`` blocks."""
    return CONFIG.format(
        # As root, nginx switches its workers to "nobody" unless told otherwise; as anyone else
        # the directive would only earn a warning.
        user="user root;" if os.geteuid() == 0 else "",
        dir=directory,
        syslog_port=syslog_port,
        log_format=log_format,
        upstream="\n".join(" " * 8 + line for line in upstream),
        port=port,
        listen_options=listen_options,
        server="\n".join(" " * 8 + line for line in server),
        location="\n".join(" " * 12 + line for line in location),
    )


def shape(datagram: str) -> str:
    """``<190>Nov 21 21:30:00 nginx: `` and then the line as the file has it: the line."""
    return datagram.split(" nginx: ", 1)[-1]


def nginx_version() -> str:
    """``1.22.1``, from ``nginx -v`` (which prints to stderr)."""
    result = subprocess.run([NGINX_BINARY, "-v"], capture_output=True, text=True, check=True)
    match = re.search(r"nginx/(\S+)", result.stderr)
    assert match is not None, result.stderr
    return match.group(1)


def nginx_installed() -> bool:
    return shutil.which(NGINX_BINARY) is not None


@dataclass
class Nginx:
    """A running nginx: where it listens, where it logs, and its log lines as they come."""

    settings: Settings
    port: int
    directory: Path
    access_log: Path
    error_log: Path
    feed: LogFeed
    process: subprocess.Popen[bytes]

    @property
    def column(self) -> str:
        return self.settings.name

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)

    def reload(self) -> None:
        """Reload the config, as ``nginx -s reload`` does: new workers, and the old one shuts
        down gracefully, closing its idle connections (kept-alive upstream ones too)."""
        self.process.send_signal(signal.SIGHUP)


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGQUIT: graceful shutdown; then the fast one, then kill, each with a bound.
    for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung nginx fails the test
            continue


def _probe(port: int, process: subprocess.Popen[bytes], error_log: Path) -> None:
    """One request through nginx: the config works and the upstream answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
        probe.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 20
        data = b""
        while time.monotonic() < deadline:
            try:
                chunk = probe.recv(65536)
            except TimeoutError:
                # Each wait is short, so that an nginx that failed to start is reported at once.
                if process.poll() is not None:
                    break
                continue
            if not chunk:
                break
            data += chunk
    if process.poll() is not None:
        log = error_log.read_text() if error_log.exists() else ""
        raise RuntimeError(NGINX_DIED.format(code=process.returncode, log=log))
    assert data.startswith(b"HTTP/1.1 200 "), data


@contextmanager
def run_nginx(upstream_port: int, settings: Settings, directory: Path) -> Iterator[Nginx]:
    """Run nginx configured by ``settings`` in front of ``127.0.0.1:upstream_port``, with its
    config, pid file, logs and temporary files in ``directory``."""
    listener = listening()
    port = listener.getsockname()[1]
    feed = LogFeed("nginx", shape)
    conf = directory / "nginx.conf"
    conf.write_text(config_text(settings, directory, port, upstream_port, feed.port))
    error_log = directory / "error.log"
    # nginx's own variable for inherited listening sockets: "fd;fd;...".
    env = {**os.environ, "NGINX": f"{listener.fileno()};"}
    process = subprocess.Popen(
        [NGINX_BINARY, "-p", str(directory), "-c", str(conf), "-e", str(error_log)],
        pass_fds=[listener.fileno()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _probe(port, process, error_log)
        yield Nginx(
            settings=settings,
            port=port,
            directory=directory,
            access_log=directory / "access.log",
            error_log=error_log,
            feed=feed,
            process=process,
        )
    finally:
        _stop(process)
        listener.close()
        feed.close()
