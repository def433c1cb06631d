"""The observed app with a Prometheus metrics library, one variant per attribute:
``instrumentator_plain`` / ``instrumentator_app`` (prometheus-fastapi-instrumentator,
``Instrumentator().instrument(app).expose(app)``) and ``exporter_plain`` / ``exporter_app``
(starlette-exporter's ``PrometheusMiddleware`` and ``handle_metrics`` on ``/metrics``).

Each server process has its own default registry; the test scrapes ``/metrics`` before and after
a request and compares the two (:func:`tests.integrations.test_prometheus.increments`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from starlette_exporter import PrometheusMiddleware, handle_metrics

from tests.integrations.support import INSTALL, Observed, Recorder, Step, build

VARIANTS = ("instrumentator_plain", "instrumentator_app", "exporter_plain", "exporter_app")
UNKNOWN = "no variant {name!r}: one of {variants}"


def _instrumentator(app: FastAPI) -> None:
    Instrumentator().instrument(app).expose(app)


def _exporter(app: FastAPI) -> None:
    app.add_middleware(PrometheusMiddleware, group_paths=True)
    app.add_route("/metrics", handle_metrics)


def _nothing(rid: str) -> Any:
    return None


def variant(name: str) -> Observed:
    if name not in VARIANTS:
        raise AttributeError(UNKNOWN.format(name=name, variants=VARIANTS))
    library: Step = _instrumentator if name.startswith("instrumentator") else _exporter
    steps = [library] if name.endswith("plain") else [library, INSTALL]
    recorder = Recorder()
    recorder.install_logging()
    return Observed(build(steps, recorder), recorder, _nothing)


def __getattr__(name: str) -> Observed:
    return variant(name)
