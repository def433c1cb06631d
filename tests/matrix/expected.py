"""The expected matrix: what each server configuration does with each way of leaving.

``tests/test_matrix.py`` asserts that every observed cell equals its entry here, and that the
committed ``docs/servers.md`` says the same, so neither the table nor the page can drift from what
the servers do. A cell that does not work is a ``limitation`` with its reason read in the
server's source and a workaround; the test pins it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tests.matrix.scenarios import SCENARIOS
from tests.matrix.servers import COLUMNS

Outcome = Literal["trips", "never", "limitation", "n/a"]


@dataclass(frozen=True)
class Expected:
    """One cell. ``why`` says why a token never trips (or why the cell is not measured),
    with the source file and function; ``workaround`` what a user can do about a limitation."""

    outcome: Outcome
    why: str = ""
    workaround: str = ""

    @property
    def trips(self) -> bool:
        return self.outcome == "trips"


TRIPS = Expected("trips")

COMPLETE = Expected(
    "never",
    "The responses were complete before the connection closed: the token is final by then "
    "(`fastapi_abort/_middleware.py`, `RequestState._complete`).",
)
SHUTDOWN = Expected(
    "never",
    "The client did not leave: the server ends the request itself. uvicorn cancels the task "
    "once `--timeout-graceful-shutdown` has passed (`uvicorn/server.py`, `Server.shutdown`), "
    "hypercorn once `graceful_timeout` has passed (`hypercorn/asyncio/run.py` and "
    "`hypercorn/trio/run.py`, `worker_serve`), daphne at once (`daphne/server.py`, "
    "`Server.kill_all_applications`); gunicorn and granian kill the worker process after their "
    "graceful timeout, so the request never ends at all. The endpoint sees the event loop's "
    "cancellation, not `OperationCancelled`; once it has, the middleware cancels the token with "
    "reason `shutdown`, for what is bound to it (callbacks, linked tokens, worker threads): see "
    "[When the server shuts down](shutdown.md).",
)
H1_ONLY = Expected("n/a", "HTTP/1.1 only: HTTP/2 multiplexes streams and has no pipelining.")
NOT_OVER_H2 = Expected("n/a", "Not measured over HTTP/2.")
H2_ONLY = Expected("n/a", "HTTP/2 only.")

READ_THE_BODY = (
    "Read (or drain) the request body before long work: `await request.body()`, or "
    "`async for _ in request.stream(): pass`; FastAPI does it for a declared body. Once the "
    "body is read, the disconnect is seen (the `upload_then_leave` row)."
)
NO_PIPELINING = (
    "Browsers and common HTTP clients do not pipeline. If pipelining clients matter, serve "
    "behind nginx (it sends one request at a time per upstream connection), or use uvicorn "
    "with `--http h11`."
)

UNREAD_UVICORN = Expected(
    "limitation",
    "uvicorn stops reading the socket once 64 KiB of request body wait unread "
    "(`uvicorn/protocols/http/flow_control.py`, `HIGH_WATER_LIMIT`; `on_body` in `h11_impl.py` "
    "and `httptools_impl.py` calls `FlowControl.pause_reading`), and the middleware holds at "
    "most one body message the app has not taken (`fastapi_abort/_middleware.py`, "
    "`RequestState._must_wait`): the client's FIN waits behind the unread body.",
    READ_THE_BODY,
)
UNREAD_HYPERCORN = Expected(
    "limitation",
    "hypercorn hands the body to the app through a bounded queue (`max_app_queue_size`, 10 "
    "messages: `hypercorn/asyncio/task_group.py` and `hypercorn/trio/task_group.py`, "
    "`TaskGroup.spawn_app`); `HTTPStream.handle` (`hypercorn/protocol/http_stream.py`) waits on "
    "it for every body chunk, so the connection stops reading and the FIN behind the body is "
    "never read.",
    READ_THE_BODY,
)
UNREAD_GRANIAN = Expected(
    "limitation",
    "granian's HTTP/1.1 (hyper) reads the request body only as the app asks for it, and "
    "watches for the connection's end only once the body is done (hyper "
    "`src/proto/h1/conn.rs`, `Conn::poll_read_body` and `Conn::mid_message_detect_eof`).",
    READ_THE_BODY,
)
UNREAD_DAPHNE = Expected(
    "limitation",
    "daphne reads the whole body before it starts the app and queues it as 8 KiB "
    "`http.request` messages, with `http.disconnect` behind them (`daphne/http_protocol.py`, "
    "`WebRequest.process` and `WebRequest.send_disconnect`). The middleware's watcher holds at "
    "most one body message the app has not taken (`fastapi_abort/_middleware.py`, "
    "`RequestState._must_wait`), so it never reaches the disconnect.",
    READ_THE_BODY,
)
PIPELINED_HTTPTOOLS = Expected(
    "limitation",
    "uvicorn's httptools protocol stops reading the socket while a pipelined request waits "
    "behind the one in flight (`uvicorn/protocols/http/httptools_impl.py`, "
    "`HttpToolsProtocol.on_headers_complete`: `self.flow.pause_reading()`), so the FIN is not "
    "seen until that response is complete; `connection_lost` would also mark only the newest "
    "request (`self.cycle`). On uvloop, the queued request then runs and uvicorn logs "
    "`Exception in ASGI application` (RuntimeError from writing to the closed transport).",
    NO_PIPELINING,
)
PIPELINED_HYPERCORN = Expected(
    "limitation",
    "hypercorn stops reading the connection while h11 holds a pipelined request "
    "(`hypercorn/protocol/h11.py`, `H11Protocol._handle_events`: on `h11.PAUSED` it waits for "
    "`can_read`, set when the response in flight is done), so the FIN is not seen.",
    NO_PIPELINING,
)
PIPELINED_GRANIAN = Expected(
    "limitation",
    "granian's HTTP/1.1 (hyper) does not look for the connection's end while it has unread "
    "bytes buffered, here the pipelined request (hyper `src/proto/h1/conn.rs`, "
    "`Conn::mid_message_detect_eof` returns early when the read buffer is not empty).",
    NO_PIPELINING,
)

_H1_DEFAULTS: dict[str, Expected] = {
    **dict.fromkeys(SCENARIOS, TRIPS),
    "keepalive_complete": COMPLETE,
    "graceful_shutdown": SHUTDOWN,
    "h2_stream_reset": H2_ONLY,
}
_H2_DEFAULTS: dict[str, Expected] = {
    **dict.fromkeys(SCENARIOS, TRIPS),
    "keepalive_complete": COMPLETE,
    "graceful_shutdown": SHUTDOWN,
    "unread_body": NOT_OVER_H2,
    "pipelined": H1_ONLY,
    "expect_continue": NOT_OVER_H2,
}
_OVERRIDES: dict[str, dict[str, Expected]] = {
    "uvicorn-h11": {"unread_body": UNREAD_UVICORN},
    "uvicorn-httptools": {"unread_body": UNREAD_UVICORN, "pipelined": PIPELINED_HTTPTOOLS},
    "uvicorn-httptools-uvloop": {
        "unread_body": UNREAD_UVICORN,
        "pipelined": PIPELINED_HTTPTOOLS,
    },
    "hypercorn-asyncio": {"unread_body": UNREAD_HYPERCORN, "pipelined": PIPELINED_HYPERCORN},
    "hypercorn-trio": {"unread_body": UNREAD_HYPERCORN, "pipelined": PIPELINED_HYPERCORN},
    "granian": {"unread_body": UNREAD_GRANIAN, "pipelined": PIPELINED_GRANIAN},
    "daphne": {"unread_body": UNREAD_DAPHNE},
    "gunicorn-uvicorn": {"unread_body": UNREAD_UVICORN, "pipelined": PIPELINED_HTTPTOOLS},
}

EXPECTED: dict[str, dict[str, Expected]] = {
    column.name: {
        **(_H2_DEFAULTS if column.http == "h2" else _H1_DEFAULTS),
        **_OVERRIDES.get(column.name, {}),
    }
    for column in COLUMNS
}


def measured(column: str) -> list[str]:
    """The scenarios measured in ``column`` (all but its ``n/a`` cells), in row order."""
    return [scenario for scenario in SCENARIOS if EXPECTED[column][scenario].outcome != "n/a"]
