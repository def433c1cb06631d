"""fastapi_abort.keepalive: its validation word for word, and what the kernel really holds.

The options are read back with getsockopt() from sockets of this machine's kernel, including
a socket accept() returned: Linux copies them from the listening socket.
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Iterator

import pytest

from fastapi_abort import keepalive
from fastapi_abort.keepalive import (
    BAD_COUNT,
    BAD_SECONDS,
    BAD_USER_TIMEOUT,
    NOT_TCP,
    UNSUPPORTED,
    Keepalive,
    apply,
    listen,
)

OPTIONS = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")


def held(sock: socket.socket) -> dict[str, int]:
    """What the kernel holds for ``sock``: SO_KEEPALIVE and the four TCP options."""
    values = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name in OPTIONS:
        values[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
    return values


def expected(settings: Keepalive) -> dict[str, int]:
    return {
        "SO_KEEPALIVE": 1,
        "TCP_KEEPIDLE": settings.idle,
        "TCP_KEEPINTVL": settings.interval,
        "TCP_KEEPCNT": settings.count,
        "TCP_USER_TIMEOUT": round(settings.user_timeout * 1000),
    }


@pytest.fixture
def tcp() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        yield sock


def test_defaults_detect_a_dead_peer_in_30_seconds() -> None:
    assert Keepalive() == Keepalive(idle=10, interval=5, count=4, user_timeout=30.0)
    assert Keepalive().detection == 30


@pytest.mark.parametrize(
    ("settings", "seconds"),
    [
        (Keepalive(idle=1, interval=1, count=3, user_timeout=3), 3),
        # Without a user timeout: the count-th probe.
        (Keepalive(idle=10, interval=5, count=4, user_timeout=0), 30),
        (Keepalive(idle=2, interval=3, count=5, user_timeout=0), 17),
        # With one, the count is ignored: the first probe due once it passed.
        (Keepalive(idle=10, interval=5, count=1, user_timeout=30), 30),
        (Keepalive(idle=10, interval=5, count=4, user_timeout=12.5), 15),
        # A user timeout shorter than idle: the first probe that goes unanswered.
        (Keepalive(idle=10, interval=5, count=4, user_timeout=1), 15),
    ],
)
def test_detection(settings: Keepalive, seconds: int) -> None:
    assert settings.detection == seconds


@pytest.mark.parametrize("name", ["idle", "interval"])
@pytest.mark.parametrize("value", [0, -1, 32768, 1.5, True, None, "10"])
def test_bad_seconds(name: str, value: object) -> None:
    message = BAD_SECONDS.format(name=name, value=value, high=32767)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Keepalive(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 128, 2.0, False])
def test_bad_count(value: object) -> None:
    message = BAD_COUNT.format(value=value, high=127)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Keepalive(count=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-0.001, math.nan, math.inf, True, "30"])
def test_bad_user_timeout(value: object) -> None:
    message = BAD_USER_TIMEOUT.format(value=value)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Keepalive(user_timeout=value)  # type: ignore[arg-type]


def test_the_limits_are_accepted(tcp: socket.socket) -> None:
    settings = Keepalive(idle=32767, interval=32767, count=127, user_timeout=0)
    assert held(apply(tcp, settings)) == expected(settings)


def test_apply_sets_every_option_and_returns_the_socket(tcp: socket.socket) -> None:
    assert held(tcp)["SO_KEEPALIVE"] == 0
    assert apply(tcp) is tcp
    assert held(tcp) == expected(Keepalive())
    again = Keepalive(idle=3, interval=2, count=9, user_timeout=0.0015)
    assert held(apply(tcp, again)) == {**expected(again), "TCP_USER_TIMEOUT": 2}


@pytest.mark.parametrize(
    ("family", "kind"),
    [(socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_UNIX, socket.SOCK_STREAM)],
)
def test_apply_needs_tcp(family: socket.AddressFamily, kind: socket.SocketKind) -> None:
    with socket.socket(family, kind) as sock:
        message = NOT_TCP.format(sock=sock)
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            apply(sock)


def test_a_missing_option_is_named_and_nothing_is_set(
    tcp: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(socket, "TCP_USER_TIMEOUT")
    message = UNSUPPORTED.format(name="TCP_USER_TIMEOUT")
    with pytest.raises(OSError, match=f"^{re.escape(message)}$"):
        apply(tcp)
    assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_an_accepted_connection_inherits_the_options() -> None:
    settings = Keepalive(idle=7, interval=3, count=2, user_timeout=11)
    with listen(keepalive=settings) as listener:
        assert listener.getsockname()[0] == "127.0.0.1"
        assert listener.get_inheritable()
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        with socket.create_connection(listener.getsockname(), timeout=10) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert held(accepted) == expected(settings)
                assert held(client)["SO_KEEPALIVE"] == 0  # the client's side is its own


def test_listen_on_ipv6() -> None:
    try:
        listener = listen("::1", 0)
    except OSError as error:  # pragma: no cover - a kernel without IPv6 on loopback
        pytest.skip(f"no IPv6 on loopback: {error}")
    with listener:
        assert listener.family == socket.AF_INET6
        assert held(listener) == expected(Keepalive())


def test_listen_closes_its_socket_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[socket.socket] = []
    real = socket.socket

    def recording(*args: object) -> socket.socket:
        sock = real(*args)  # type: ignore[arg-type]
        made.append(sock)
        return sock

    monkeypatch.setattr(socket, "socket", recording)
    with listen() as taken, pytest.raises(OSError, match=r"[Aa]ddress already in use"):
        listen(port=taken.getsockname()[1])  # the port is in use (and not yet in TIME_WAIT)
    assert made[-1].fileno() == -1


def test_public_names() -> None:
    assert keepalive.__all__ == ("Keepalive", "apply", "listen")
