"""Run Debian's Apache httpd (``mod_proxy_http``, event MPM) in front of an upstream, in a tmp dir.

Apache binds its own port (it cannot inherit a socket): a free one, taken a moment before. It
runs in the foreground (``-DFOREGROUND``) with a config of its own, every path in the tmp dir,
and pipes its access and error logs to :mod:`tests.proxy.forward`, which sends each line to the
feed. The access line is in the common shape: ``status=%>s conn=%X``, where ``%X`` is the
connection's state once the response was done ("X": aborted before the response completed,
"+": may be kept alive, "-": closed).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.proxy.front import Column, Front, LogFeed, run
from tests.serve import free_port

BINARY = "/usr/sbin/apache2"
PACKAGE = "apache2"
MODULES = Path("/usr/lib/apache2/modules")
FORWARD = Path(__file__).with_name("forward.py")

COLUMNS = (
    Column("apache-default", "apache", ('ProxyPass "/" "http://app/"',)),
    Column(
        "apache-keepalive-flushpackets",
        "apache",
        ('ProxyPass "/" "http://app/" keepalive=On flushpackets=on',),
    ),
)

LOG_FORMAT = 'status=%>s conn=%X time=%D \\"%r\\"'

CONFIG = """\
ServerRoot "{dir}"
DefaultRuntimeDir "{dir}"
PidFile "{dir}/httpd.pid"
Mutex file:{dir}
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
ErrorLog "|{python} {forward} {syslog}"
LogLevel warn proxy:info proxy_http:info
LogFormat "{log_format}" abort
CustomLog "|{python} {forward} {syslog}" abort
Timeout 30
KeepAliveTimeout 30
ProxyTimeout {timeout}
{settings}
"""


def installed() -> bool:
    return Path(BINARY).exists()


def version() -> str:
    result = subprocess.run([BINARY, "-v"], capture_output=True, text=True, check=True)
    match = re.search(r"Apache/(\S+)", result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


@contextmanager
def running(column: Column, upstream_port: int, directory: Path) -> Iterator[Front]:
    feed = LogFeed("apache")
    port = free_port()
    upstream = f"127.0.0.1:{upstream_port}"
    conf = directory / "httpd.conf"
    conf.write_text(
        CONFIG.format(
            dir=directory,
            port=port,
            # As root, Apache runs its children as this user (it refuses to run them as root).
            user="User www-data\nGroup www-data",
            modules=MODULES,
            python=sys.executable,
            forward=FORWARD,
            syslog=feed.port,
            log_format=LOG_FORMAT,
            timeout=round(column.timeout),
            settings="\n".join(
                line.replace("http://app/", f"http://{upstream}/") for line in column.settings
            ),
        )
    )
    argv = [BINARY, "-DFOREGROUND", "-f", str(conf)]
    with run(column, argv, directory, port, feed) as front:
        yield front
