"""A gunicorn config file: the keepalive options on gunicorn's listening sockets.

``when_ready`` runs in the master once its sockets exist and before it forks any worker
(``gunicorn/arbiter.py``, ``Arbiter.start``); the workers accept on the same sockets, so every
connection inherits the options. The settings come from ``ABORT_KEEPALIVE`` (JSON of
:class:`~fastapi_abort.keepalive.Keepalive` fields), so the test chooses them.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi_abort.keepalive import Keepalive, apply

worker_class = "uvicorn_worker.UvicornWorker"
workers = 2
loglevel = "info"
#: Seconds its workers get to finish at the end of a test, not the default 30.
graceful_timeout = 5


def when_ready(server: Any) -> None:
    settings = Keepalive(**json.loads(os.environ["ABORT_KEEPALIVE"]))
    for listener in server.LISTENERS:
        apply(listener.sock, settings)
