"""How the matrix app reports what happened to each request: through :mod:`tests.events`.

Events: ``started``, ``tripped``, ``finished``, ``final`` (see :mod:`tests.matrix.app`).
"""

from __future__ import annotations

from tests.events import Emitter

#: Environment variable that tells the app where to send its events.
EVENTS_ENV = "ABORT_MATRIX_EVENTS"

#: Report an event of a request, stamped now; a no-op without ``$ABORT_MATRIX_EVENTS``.
emit = Emitter(EVENTS_ENV)
