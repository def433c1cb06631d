"""What each observability library records with fastapi-abort: the one source of the values the
tests assert and of the tables of ``docs/works-with.md`` (``test_works_with_page.py`` checks
that the page shows these).

A client leaves one of the routes of :data:`tests.integrations.support.ABORTS`: ``async`` and
``def`` mid-endpoint, ``stream`` (an async generator on ``ct.sleep()``) and ``def-stream`` (a
``def`` generator on ``ct.sleep_blocking()``) after the first chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

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
#: What the contrib server span of a ``def-stream`` abort is today when fastapi-abort's
#: middleware is outside OpenTelemetry's (the pinned defect).
OTEL_DEF_STREAM_DEFECT: Span = ("ERROR", 200, "-", "RuntimeError, RuntimeError")
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
OTEL_NATIVE_ENDPOINT = ("ERROR", "fastapi_abort._token.OperationCancelled")

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
#: The statuses of Sentry's middleware spans (``middleware_spans=True``) of a ``def-stream``
#: abort: none without the plugin; today ``internal_error`` on those inside fastapi-abort's
#: middleware (the pinned defect).
SENTRY_DEF_STREAM_DEFECT = "internal_error"

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
#: What starlette-exporter counts today for a ``def-stream`` abort with the plugin (the pinned
#: defect).
STARLETTE_EXPORTER_DEF_STREAM_DEFECT = {"500": 1}


@dataclass(frozen=True)
class Row:
    """One line of a library's table on the page."""

    library: str
    normal: str
    aborted: str
    order: str
    notes: str

    def markdown(self) -> str:
        return f"| {self.library} | {self.normal} | {self.aborted} | {self.order} | {self.notes} |"


def _span(span: Span) -> str:
    status, code, error, events = span
    text = f"{status} {code}"
    if error != "-":
        text += f", error.type {error}"
    if events != "-":
        text += f", exception events {events}"
    return text


def abort_cell(by_route: dict[str, object], render: object = str) -> str:
    """A table cell: what is recorded for an abort of each route, ``route: value; ...``."""
    assert callable(render)
    return "; ".join(f"{name}: {render(by_route[name])}" for name in ABORT_NAMES)


def otel_span_cell(by_route: dict[str, Span]) -> str:
    return "; ".join(f"{name}: {_span(by_route[name])}" for name in ABORT_NAMES)


def counts_cell(by_route: dict[str, Counts]) -> str:
    return "; ".join(
        f"{name}: " + ", ".join(f"{label} +{n}" for label, n in sorted(by_route[name].items()))
        for name in ABORT_NAMES
    )


def sentry_cell(by_route: dict[str, Transaction]) -> str:
    return "; ".join(
        f"{name}: {status} {code}, {errors} error events"
        for name, (status, code, errors) in ((n, by_route[n]) for n in ABORT_NAMES)
    )
