"""What each observability library records with fastapi-abort: the one source of the values the
tests assert and of the tables of ``docs/works-with.md`` (``test_works_with_page.py`` checks
that the page shows these).

A client leaves one of the routes of :data:`tests.integrations.support.ABORTS`: ``async`` and
``def`` mid-endpoint, ``stream`` (an async generator that checks
``ct.is_cancellation_requested`` between chunks) and ``def-stream`` (a
``def`` generator on ``ct.sleep_blocking()``) after the first chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ABORT_NAMES = ("async", "def", "stream", "def-stream")

#: The server span of an aborted request, by route: ``status`` (span status), HTTP status code,
#: ``error.type`` attribute (``-`` if none), exception events (``-`` if none).
Span = tuple[str, int, str, str]

_OK_499: Span = ("UNSET", 499, "-", "-")
_OK_200: Span = ("UNSET", 200, "-", "-")
_DISCONNECTED: Span = ("ERROR", 200, "ConnectionError", "-")

#: OpenTelemetry's contrib instrumentation (``instrument_app`` or ``instrument()``).
OTEL_CONTRIB = {
    "plugin": {"async": _OK_499, "def": _OK_499, "stream": _OK_200, "def-stream": _OK_200},
    "plain": {"async": _OK_200, "def": _OK_200, "stream": _OK_200, "def-stream": _OK_200},
}
#: FastAPI's built-in telemetry (``FastAPI(telemetry=...)``).
OTEL_NATIVE = {
    "plugin": {
        "async": _OK_499,
        "def": _OK_499,
        "stream": _DISCONNECTED,
        "def-stream": _DISCONNECTED,
    },
    "plain": {
        "async": _OK_200,
        "def": _OK_200,
        "stream": _DISCONNECTED,
        "def-stream": _DISCONNECTED,
    },
}
#: FastAPI's ``fastapi.endpoint`` span of an aborted ``async``/``def`` endpoint, with the plugin.
OTEL_NATIVE_ENDPOINT = ("ERROR", "fastapi_abort.OperationCancelled")

#: Sentry: the transaction's status and HTTP status, and the number of error events.
Transaction = tuple[str, int, int]
SENTRY = {
    "plugin": {
        "async": ("invalid_argument", 499, 0),
        "def": ("invalid_argument", 499, 0),
        "stream": ("ok", 200, 0),
        "def-stream": ("ok", 200, 0),
    },
    "plain": {name: ("ok", 200, 0) for name in ABORT_NAMES},
}

#: Prometheus: the counter increments of an aborted request, as ``status label: count``.
Counts = dict[str, int]
PROMETHEUS_INSTRUMENTATOR = {
    "plugin": {
        "async": {"4xx": 1},
        "def": {"4xx": 1},
        "stream": {"2xx": 1},
        "def-stream": {"2xx": 1},
    },
    "plain": {name: {"2xx": 1} for name in ABORT_NAMES},
}
STARLETTE_EXPORTER = {
    "plugin": {
        "async": {"499": 1},
        "def": {"499": 1},
        "stream": {"200": 1},
        "def-stream": {"200": 1},
    },
    "plain": {name: {"200": 1} for name in ABORT_NAMES},
}


HEADER = (
    "| setup | normal request identical | a client that leaves | notes |",
    "| --- | --- | --- | --- |",
)


def _span(span: Span) -> str:
    status, code, error, events = span
    text = f"{status} {code}"
    if error != "-":
        text += f", error.type {error}"
    if events != "-":
        text += f", exception events {events}"
    return text


def _by_route(render: Callable[[T], str], by_route: dict[str, T]) -> str:
    return "; ".join(f"{name}: {render(by_route[name])}" for name in ABORT_NAMES)


def _counts(counts: Counts) -> str:
    return ", ".join(f"{label} +{n}" for label, n in sorted(counts.items()))


def _transaction(transaction: Transaction) -> str:
    status, code, errors = transaction
    return f"{status} {code}, {errors} error events"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def tables() -> dict[str, list[str]]:
    """The table of each library of the page's Observability section, by its heading."""
    contrib = _by_route(_span, OTEL_CONTRIB["plugin"])
    native = _by_route(_span, OTEL_NATIVE["plugin"])
    sentry = _by_route(_transaction, SENTRY["plugin"])
    return {
        "OpenTelemetry": [
            _row(
                "`install(app)`, then `instrument_app(app)`",
                "yes",
                f"server span: {contrib}",
                "the order that works: OpenTelemetry's middleware outside fastapi-abort's",
            ),
            _row(
                "`instrument_app(app)`, then `install(app)`; or `instrument()` before the app",
                "yes",
                f"server span: {contrib}",
                "OpenTelemetry's middleware inside fastapi-abort's: the same spans as outside",
            ),
            _row(
                "FastAPI's own telemetry, `FastAPI(telemetry=...)`, either order",
                "yes",
                f"server span: {native}; `fastapi.endpoint` span of async/def: "
                f"{OTEL_NATIVE_ENDPOINT[0]}, error.type {OTEL_NATIVE_ENDPOINT[1]}",
                "a stream's ConnectionError is FastAPI's own, with or without the plugin",
            ),
            _row(
                "no fastapi-abort",
                "(reference)",
                f"server span: {_by_route(_span, OTEL_CONTRIB['plain'])}",
                "the endpoint runs on and answers 200 to nobody",
            ),
        ],
        "Sentry": [
            _row(
                "`sentry_sdk.init(...)`, then `install(app)`",
                "yes, with `middleware_spans` False or True",
                f"transaction: {sentry}",
                "Sentry maps any 4xx to invalid_argument",
            ),
            _row(
                "`middleware_spans=True`",
                "yes: the same span names",
                "def-stream: the middleware spans inside fastapi-abort's end without a status, "
                "as without it",
                "",
            ),
            _row(
                "no fastapi-abort",
                "(reference)",
                f"transaction: {_by_route(_transaction, SENTRY['plain'])}",
                "",
            ),
        ],
        "Prometheus": [
            _row(
                "prometheus-fastapi-instrumentator's `instrument(app)`, then `install(app)`",
                "yes",
                "`http_requests_total` status: "
                + _by_route(_counts, PROMETHEUS_INSTRUMENTATOR["plugin"]),
                "without fastapi-abort: 2xx +1 for every route",
            ),
            _row(
                "starlette-exporter's `PrometheusMiddleware`, then `install(app)`",
                "yes",
                "`starlette_requests_total` status_code: "
                + _by_route(_counts, STARLETTE_EXPORTER["plugin"]),
                "without fastapi-abort: 200 +1 for every route",
            ),
        ],
        "asgi-correlation-id": [
            _row(
                "`add_middleware(CorrelationIdMiddleware)`, then `install(app)`",
                "yes: the same `X-Request-ID`",
                "the 499 record of the `fastapi_abort` logger has the request's "
                "`correlation_id` (with `CorrelationIdFilter` on its handler), for every route",
                "a stream's line says 499 although its response started with 200",
            ),
        ],
    }


def markdown() -> str:
    """The tables as the page shows them, each under its ``###`` heading."""
    parts = []
    for heading, rows in tables().items():
        parts.append("\n".join([f"### {heading}", "", *HEADER, *rows]))
    return "\n\n".join(parts)
