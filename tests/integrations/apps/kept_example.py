"""``docs/examples/recipe_background_kept.py`` for a real server: its ``app``, with what the
test waits on added (the ``/await`` long-poll of :mod:`tests.recording`, keyed by the order).

A request's record sets ``started`` when the request reaches the app, ``logged`` with its quiet
499 line, and ``background`` when the ``mail`` logger says its receipt was sent.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tests import EXAMPLES
from tests.integrations.apps.twins import Record
from tests.recording import Recorder

sys.path.insert(0, str(EXAMPLES))

app: Any = importlib.import_module("recipe_background_kept").app
recorder = Recorder(Record)
recorder.install_logging()
recorder.serve_await(app)


class _Started:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/orders/"):
            recorder.record(scope["path"].rsplit("/", 1)[-1]).events["started"].set()
        await self.app(scope, receive, send)


class _Receipts(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        order = str(record.args[0]) if isinstance(record.args, tuple) else ""
        recorder.record(order).events["background"].set()


app.add_middleware(_Started)
mail = logging.getLogger("mail")
mail.setLevel(logging.INFO)
mail.addHandler(_Receipts())
