"""Run Debian's Varnish Cache in front of an upstream on 127.0.0.1, in a tmp dir.

varnishd binds its own port (a free one, taken a moment before) and runs in the foreground
(``-F``) with its working directory (``-n``) in the tmp dir and a VCL that sends every request
to the upstream in one of two ways: ``pass`` (fetched for this client only, not cached) or
``pipe`` (a byte tunnel between the client and a backend connection of its own). Its log comes
from ``varnishncsa`` on the same working directory, one line per request on its stdout, in the
common shape of :mod:`tests.proxy.front`: ``status=%s handling=pass|pipe``.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.proxy.front import Column, Front, LogFeed, run, stop
from tests.raw_http import read_response
from tests.serve import free_port

BINARY = "/usr/sbin/varnishd"
NCSA = "/usr/bin/varnishncsa"
PACKAGE = "varnish"

COLUMNS = (
    Column("varnish-pass", "varnish", ("sub vcl_recv { return (pass); }",)),
    Column("varnish-pipe", "varnish", ("sub vcl_recv { return (pipe); }",)),
)

NCSA_NOT_READY = "varnishncsa logged no request within {timeout} s"
ATTACH_TIMEOUT = 15.0
LOG_FORMAT = 'status=%s handling=%{Varnish:handling}x time=%D "%m %U %H"'

VCL = """\
vcl 4.1;

backend app {{
    .host = "127.0.0.1";
    .port = "{upstream}";
    .first_byte_timeout = {timeout}s;
    .between_bytes_timeout = {timeout}s;
}}

{settings}
"""


def installed() -> bool:
    return Path(BINARY).exists() and Path(NCSA).exists()


def version() -> str:
    result = subprocess.run([BINARY, "-V"], capture_output=True, text=True, check=True)
    match = re.search(r"varnish-(\S+)", result.stderr)
    assert match is not None, result.stderr
    return match.group(1)


def _until_logging(front: Front) -> None:
    """Return once varnishncsa logs requests: it shows only those that end after it attached
    to varnishd's shared log, which takes a moment. One request after another, each waited
    for with a short bound, within :data:`ATTACH_TIMEOUT` in all."""
    deadline = time.monotonic() + ATTACH_TIMEOUT
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        path = f"/varnishncsa-ready-{attempt}"
        with front.connect() as client:
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            read_response(client)
        try:
            front.feed.wait_for(f'"GET {path} HTTP/1.1"', timeout=0.5)
            return
        except AssertionError:
            continue
    raise RuntimeError(NCSA_NOT_READY.format(timeout=ATTACH_TIMEOUT))


@contextmanager
def running(column: Column, upstream_port: int, directory: Path) -> Iterator[Front]:
    feed = LogFeed("varnish")
    port = free_port()
    vcl = directory / "default.vcl"
    vcl.write_text(
        VCL.format(
            upstream=upstream_port,
            timeout=round(column.timeout),
            settings="\n".join(column.settings),
        )
    )
    workdir = directory / "varnish"
    argv = [
        BINARY,
        "-F",
        "-n",
        str(workdir),
        "-a",
        f"127.0.0.1:{port}",
        "-f",
        str(vcl),
        "-s",
        "malloc,16m",
        # A pipe has no first-byte timeout: its idle timeout is the one that applies.
        "-p",
        f"pipe_timeout={round(column.timeout)}",
        "-T",
        "none",
        # No jail: every process as the invoking user, who can read the tmp dir (Varnish's
        # own users cannot, under pytest's private tmp dirs).
        "-j",
        "none",
    ]
    with run(column, argv, directory, port, feed) as front:
        ncsa = subprocess.Popen(
            # Line-buffered: varnishncsa writes with stdio, which buffers a pipe in blocks.
            ["stdbuf", "-oL", NCSA, "-n", str(workdir), "-F", LOG_FORMAT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert ncsa.stdout is not None
        feed.follow(ncsa.stdout)
        try:
            _until_logging(front)
            yield front
        finally:
            stop(ncsa)
            ncsa.stdout.close()
