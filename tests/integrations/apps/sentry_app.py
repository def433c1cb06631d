"""The observed app with sentry-sdk's Starlette and FastAPI integrations, one variant per
attribute (``plain``, ``app``; ``spans_plain``, ``spans_app`` with ``middleware_spans=True``).

Sentry sends nothing anywhere: its transport (:class:`Recording`) keeps every envelope item in
the server process, and ``/_test/collected/{rid}`` answers the events and transactions of the
request (:func:`events_of`), in the order Sentry captured them.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration
from sentry_sdk.transport import Transport

from tests.integrations.support import INSTALL, Collected, Observed, Recorder, Step, build

VARIANTS = ("plain", "app", "spans_plain", "spans_app")
UNKNOWN = "no variant {name!r}: one of {variants}"
#: A DSN is needed for the client to capture at all; the transport below never connects to it.
DSN = "http://public@127.0.0.1:9/1"

collected = Collected()


class Recording(Transport):
    """Keeps every event and transaction, as JSON, instead of sending them."""

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type in ("event", "transaction") and item.payload.json is not None:
                collected.add(item.payload.json)


def events_of(rid: str) -> list[dict[str, Any]]:
    """What Sentry captured for the request whose URL has ``rid``: for each event, its type, its
    transaction's name and status, its exceptions' types and mechanisms' ``handled``, and the
    spans of a transaction (op, description, status)."""
    return [
        {
            "type": event.get("type", "error"),
            "level": event.get("level"),
            "transaction": event.get("transaction"),
            "status": event.get("contexts", {}).get("trace", {}).get("status"),
            "http_status": event.get("contexts", {}).get("response", {}).get("status_code"),
            "exceptions": [
                [value.get("type"), value.get("mechanism", {}).get("handled")]
                for value in event.get("exception", {}).get("values", [])
            ],
            "spans": [
                [span.get("op"), span.get("description"), span.get("status")]
                for span in event.get("spans", [])
            ],
        }
        for event in collected.items()
        if rid in str(event.get("request", {}).get("url", ""))
    ]


def variant(name: str) -> Observed:
    if name not in VARIANTS:
        raise AttributeError(UNKNOWN.format(name=name, variants=VARIANTS))
    spans = name.startswith("spans_")
    sentry_sdk.init(
        dsn=DSN,
        transport=Recording,
        traces_sample_rate=1.0,
        integrations=[
            StarletteIntegration(middleware_spans=spans),
            FastApiIntegration(middleware_spans=spans),
        ],
    )
    steps: list[Step] = [] if name.endswith("plain") else [INSTALL]
    recorder = Recorder()
    recorder.install_logging()
    return Observed(build(steps, recorder), recorder, events_of)


def __getattr__(name: str) -> Observed:
    return variant(name)
