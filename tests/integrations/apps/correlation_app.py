"""The observed app with asgi-correlation-id (``app.add_middleware(CorrelationIdMiddleware)``,
and its ``CorrelationIdFilter`` on a handler of the ``fastapi_abort`` logger), one variant per
attribute: ``plain`` and ``app`` (with fastapi-abort).

``/_test/collected/{rid}`` answers the ``fastapi_abort`` records of the request: their message
and the ``correlation_id`` the filter set on them (:func:`records_of`).
"""

from __future__ import annotations

import logging
from typing import Any

from asgi_correlation_id import CorrelationIdFilter, CorrelationIdMiddleware
from fastapi import FastAPI

from tests.integrations.support import INSTALL, Collected, Observed, Recorder, Step, build

VARIANTS = ("plain", "app")
UNKNOWN = "no variant {name!r}: one of {variants}"

collected = Collected()


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        collected.add(
            {
                "path": getattr(record, "http_path", None),
                "message": record.getMessage(),
                "correlation_id": getattr(record, "correlation_id", None),
            }
        )


def records_of(rid: str) -> list[dict[str, Any]]:
    return [record for record in collected.items() if rid in str(record["path"])]


def _correlation(app: FastAPI) -> None:
    app.add_middleware(CorrelationIdMiddleware)


def variant(name: str) -> Observed:
    if name not in VARIANTS:
        raise AttributeError(UNKNOWN.format(name=name, variants=VARIANTS))
    steps: list[Step] = [_correlation] if name == "plain" else [_correlation, INSTALL]
    recorder = Recorder()
    recorder.install_logging()
    keep = _Keep()
    keep.addFilter(CorrelationIdFilter())
    logging.getLogger("fastapi_abort").addHandler(keep)
    return Observed(build(steps, recorder), recorder, records_of)


def __getattr__(name: str) -> Observed:
    return variant(name)
