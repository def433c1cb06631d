"""How the chaos runs serve their apps: :mod:`tests.serve`, set up for hundreds of connections.

The backlog is deep enough for every connection of the run, the open-file limit is raised (in the
run and in the server), logging goes to stderr in one format for every server
(``tests.chaos.logs``), and access logs are off.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from tests.serve import Options, Served
from tests.serve import running as serve

BACKLOG = 4096
#: Both servers' default, said out loud: hypercorn ends the task of an idle keep-alive connection
#: that the client closed only when this runs out (``protocol/h11.py`` ignores ``Closed`` without a
#: stream; ``asyncio/tcp_server.py`` waits for ``_idle_timeout``), so the run's settling waits
#: that long. The client reuses only connections idle for less (``client.REUSE_SECONDS``).
KEEP_ALIVE_SECONDS = 5
OPTIONS = Options(backlog=BACKLOG, keep_alive=KEEP_ALIVE_SECONDS, many_files=True, common_log=True)


def running(kind: str, ref: str, log: Path) -> AbstractContextManager[Served]:
    """Start ``ref`` under ``kind`` on a free port of 127.0.0.1; stop it on exit."""
    return serve(kind, log, ref, OPTIONS)
