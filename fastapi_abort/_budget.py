"""The deadline budget that travels to the next service: one header, read and written here.

As gRPC's ``grpc-timeout``, the header carries what is *left* of the caller's deadline, as a
duration, so that the two machines' clocks never need to agree: ``x-request-budget-ms: 1500``
says "I will wait 1.5 s more". :class:`~fastapi_abort.httpx.TokenTransport` sends it;
``install(app, max_budget=...)`` reads it (docs/deadlines.md).
"""

from __future__ import annotations

from collections.abc import Iterable

#: The header, lower-case as ASGI servers hand header names to the app.
BUDGET_HEADER = "x-request-budget-ms"
_NAME = BUDGET_HEADER.encode("ascii")
# A budget of more than 12 digits (about 31 years) is no budget anybody means: ignored rather
# than parsed, so that a hostile value costs no more than reading it.
_MAX_DIGITS = 12


def budget_of(headers: Iterable[tuple[bytes, bytes]], limit: float) -> float | None:
    """The seconds the caller's budget header gives the request, at most ``limit``; or None.

    The rule, for any value a client may send: a value is whole milliseconds, 1 to 12 ASCII
    digits (spaces around it allowed); ``0`` means the caller has no time left. Anything else
    (negative, fractional, empty, too long, not digits) is ignored. With several such headers,
    the smallest valid value counts (a smaller budget only shortens the caller's own request).
    No valid value: None, and the request's deadline is what it would be without the header.
    """
    least: int | None = None
    for name, value in headers:
        if name == _NAME:
            digits = value.strip()
            if 0 < len(digits) <= _MAX_DIGITS and digits.isdigit():
                milliseconds = int(digits)
                if least is None or milliseconds < least:
                    least = milliseconds
    return None if least is None else min(least / 1000, limit)


def budget_value(seconds: float) -> str:
    """The header's value for ``seconds`` left: whole milliseconds, rounded down (never a
    budget longer than what is left), and 0 once nothing is."""
    return str(max(0, int(seconds * 1000)))
