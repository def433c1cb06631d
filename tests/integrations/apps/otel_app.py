"""The observed app instrumented with OpenTelemetry, one variant per attribute (each server process
builds only the one it serves: the module's ``__getattr__``).

Spans go to an in-memory exporter in the server process; ``/_test/collected/{rid}`` answers the
spans of every trace that has a span of the request (:func:`spans_of`).

Variants: ``{setup}_{plugin}``, ``plugin`` one of ``plain`` (no fastapi-abort), ``first``
(``install(app)`` before the library's setup), ``last`` (after it); ``setup``:

* ``app``: ``FastAPIInstrumentor.instrument_app(app, tracer_provider=...)``, no global provider;
* ``appglobal``: ``instrument_app(app)`` with a global tracer provider (FastAPI's own telemetry
  then sees the provider too);
* ``global``: ``FastAPIInstrumentor().instrument(tracer_provider=...)`` before the app is made;
* ``globalglobal``: ``instrument()`` with a global tracer provider;
* ``native``: FastAPI's built-in telemetry, ``FastAPI(telemetry={"tracer_provider": ...})``
  (no contrib instrumentation).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integrations.support import INSTALL, Observed, Recorder, Step, build

SETUPS = ("app", "appglobal", "global", "globalglobal", "native")
PLUGINS = ("plain", "first", "last")
UNKNOWN = "no variant {name!r}: {{setup}}_{{plugin}}, setup in {setups}, plugin in {plugins}"

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))


def spans_of(rid: str) -> list[dict[str, Any]]:
    """The finished spans of every trace that has a span with ``rid`` in an attribute, in the
    order they ended, as JSON."""
    spans = exporter.get_finished_spans()
    traces = {
        span.context.trace_id
        for span in spans
        if span.context is not None
        and any(rid in str(value) for value in (span.attributes or {}).values())
    }
    return [_json(span) for span in spans if span.context and span.context.trace_id in traces]


def _json(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": event.name, "type": (event.attributes or {}).get("exception.type")}
            for event in span.events
        ],
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
    }


def _instrument_app(app: FastAPI) -> None:
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)


def _instrument_app_global(app: FastAPI) -> None:
    FastAPIInstrumentor.instrument_app(app)


def variant(name: str) -> Observed:
    setup, _, plugin = name.partition("_")
    if setup not in SETUPS or plugin not in PLUGINS:
        raise AttributeError(UNKNOWN.format(name=name, setups=SETUPS, plugins=PLUGINS))
    if setup in ("appglobal", "globalglobal"):
        trace.set_tracer_provider(provider)
    if setup == "global":
        FastAPIInstrumentor().instrument(tracer_provider=provider)
    elif setup == "globalglobal":
        FastAPIInstrumentor().instrument()
    library: list[Step] = []
    settings: dict[str, Any] = {}
    if setup == "app":
        library.append(_instrument_app)
    elif setup == "appglobal":
        library.append(_instrument_app_global)
    elif setup == "native":
        settings["telemetry"] = {"tracer_provider": provider}
    steps = {"plain": library, "first": [INSTALL, *library], "last": [*library, INSTALL]}[plugin]
    recorder = Recorder()
    recorder.install_logging()
    return Observed(build(steps, recorder, **settings), recorder, spans_of)


def __getattr__(name: str) -> Observed:
    return variant(name)
