"""TCP keepalive and TCP_USER_TIMEOUT: make the kernel report a client whose network vanished.

A client that loses its network (a laptop lid closed, Wi-Fi gone, a NAT that forgot the
connection) sends no FIN and no RST. The server's kernel sees nothing, the server never reports
``http.disconnect``, and the request's token never trips: an idle long request waits for
nobody, and a stream writes into a send buffer that is retransmitted for about 15 minutes
(``net.ipv4.tcp_retries2``). Two kernel mechanisms end such a connection with ``ETIMEDOUT``,
which every server turns into a disconnect:

* keepalive probes (``SO_KEEPALIVE``, ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``, ``TCP_KEEPCNT``)
  for a connection on which nothing is sent;
* ``TCP_USER_TIMEOUT`` for a connection whose sent data stays unacknowledged.

On Linux a socket returned by ``accept()`` inherits all five options from its listening socket
(the kernel clones the listener's socket for each connection), so setting them on the listening
socket that is handed to the server is enough: :func:`listen` makes such a socket. The options
are Linux's: on another system :func:`apply` raises :class:`OSError` naming the missing one.
See docs/network.md for each server's way to take the socket, and what was measured.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

from ._checks import is_count, is_seconds

__all__ = ("Keepalive", "apply", "listen")

BAD_SECONDS = "Keepalive({name}={value!r}): expected a whole number of seconds from 1 to {high}"
BAD_COUNT = "Keepalive(count={value!r}): expected a whole number of probes from 1 to {high}"
BAD_USER_TIMEOUT = (
    "Keepalive(user_timeout={value!r}): expected seconds, 0 or more and finite "
    "(0 leaves the kernel's retransmission limit, net.ipv4.tcp_retries2)"
)
NOT_TCP = "apply() needs a TCP socket (SOCK_STREAM of AF_INET or AF_INET6), got {sock!r}"
UNSUPPORTED = (
    "socket.{name} is missing: this system's TCP has no such option "
    "(TCP keepalive tuning and TCP_USER_TIMEOUT are Linux's)"
)

#: Linux's limits (``include/net/tcp.h``: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT).
MAX_IDLE = 32767
MAX_INTERVAL = 32767
MAX_COUNT = 127


@dataclass(frozen=True)
class Keepalive:
    """How soon the kernel gives up on a silent peer; the defaults take about 30 s.

    An idle connection is probed after ``idle`` seconds without traffic, then every
    ``interval`` seconds; it is dropped after ``count`` unanswered probes or, when
    ``user_timeout`` is set, at the first probe due once ``user_timeout`` seconds passed without
    an answer (Linux then ignores ``count``; see :attr:`detection`). A connection with
    unacknowledged data is dropped ``user_timeout`` seconds after the last acknowledgement. A
    client that is still there answers every probe (its kernel does, not the application): a
    healthy connection is never dropped, however long it idles.

    :param idle: seconds without traffic before the first probe (``TCP_KEEPIDLE``), 1 to 32767.
    :param interval: seconds between probes (``TCP_KEEPINTVL``), 1 to 32767.
    :param count: unanswered probes before the connection is dropped (``TCP_KEEPCNT``), 1 to
        127.
    :param user_timeout: seconds that sent data (or probes) may stay unacknowledged
        (``TCP_USER_TIMEOUT``, set in whole milliseconds); ``0`` keeps the kernel's default
        (retransmissions for about 15 minutes).
    :raises ValueError: for a value out of range, a bool or a fraction where whole seconds are
        needed.
    """

    idle: int = 10
    interval: int = 5
    count: int = 4
    user_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name, high in (("idle", MAX_IDLE), ("interval", MAX_INTERVAL)):
            value = getattr(self, name)
            if not is_count(value, low=1) or value > high:
                raise ValueError(BAD_SECONDS.format(name=name, value=value, high=high))
        if not is_count(self.count, low=1) or self.count > MAX_COUNT:
            raise ValueError(BAD_COUNT.format(value=self.count, high=MAX_COUNT))
        if not is_seconds(self.user_timeout):
            raise ValueError(BAD_USER_TIMEOUT.format(value=self.user_timeout))

    @property
    def detection(self) -> int:
        """Seconds until an idle connection to a vanished peer is dropped: probes go out
        ``idle`` seconds after the last packet received, then every ``interval`` seconds. With
        a ``user_timeout`` the kernel ignores ``count`` and drops the connection at the first
        probe due once ``user_timeout`` seconds passed (``tcp_keepalive_timer()`` in Linux's
        ``net/ipv4/tcp_timer.c``); without one, when the ``count``-th probe went unanswered."""
        if not self.user_timeout:
            return self.idle + self.interval * self.count
        intervals = math.ceil(max(self.user_timeout - self.idle, 0) / self.interval)
        return self.idle + self.interval * max(intervals, 1)


def apply(sock: socket.socket, keepalive: Keepalive = Keepalive()) -> socket.socket:
    """Set the keepalive options and ``TCP_USER_TIMEOUT`` on ``sock``, and return it.

    ``sock`` may be a listening socket (on Linux every connection it accepts inherits the
    options) or a connected one. Setting them again replaces them.

    :raises ValueError: if ``sock`` is not a TCP socket.
    :raises OSError: if the system lacks one of the options (each is Linux's), naming it.
    """
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError(NOT_TCP.format(sock=sock))
    settings = (
        ("TCP_KEEPIDLE", keepalive.idle),
        ("TCP_KEEPINTVL", keepalive.interval),
        ("TCP_KEEPCNT", keepalive.count),
        ("TCP_USER_TIMEOUT", round(keepalive.user_timeout * 1000)),
    )
    options = [(_option(name), value) for name, value in settings]  # all found before any set
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in options:
        sock.setsockopt(socket.IPPROTO_TCP, option, value)
    return sock


def listen(
    host: str = "127.0.0.1",
    port: int = 0,
    keepalive: Keepalive = Keepalive(),
    *,
    backlog: int = 2048,
) -> socket.socket:
    """A TCP socket bound to ``host`` and ``port``, listening, with ``keepalive`` applied, that
    a server can take (uvicorn's ``Server.run(sockets=[sock])`` or ``--fd``, hypercorn's
    ``fd://``) and a child process can inherit.

    ``port=0`` takes a free port: read it from ``sock.getsockname()[1]``. ``SO_REUSEADDR`` is
    set, as servers do for their own sockets. An IPv6 ``host`` (one with a ``:``) makes an
    ``AF_INET6`` socket. ``backlog`` is 2048, uvicorn's and hypercorn's default.

    :raises OSError: if the address cannot be bound, or an option is missing (see
        :func:`apply`).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        apply(sock, keepalive)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _option(name: str) -> int:
    option: int | None = getattr(socket, name, None)
    if option is None:
        raise OSError(UNSUPPORTED.format(name=name))
    return option
