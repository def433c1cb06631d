"""What the apps of the streaming and middleware tests share: each is built twice, with
fastapi-abort installed (``app``) and without (``plain``), the same routes on both.

On the plain app the token is :data:`CancellationToken.NONE`, which never trips: the same code
then shows what FastAPI, Starlette and the other packages do on their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.from_thread
from fastapi import Request

from fastapi_abort import CancellationToken, request_aborted
from tests import recording

#: The cross-origin page of the CORS cases (imported by the tests without importing an app,
#: whose import would set up its logging in the test process).
ORIGIN = "http://front.example"

#: What ``ended`` says of a block that ran to its end.
COMPLETED = "completed"


@dataclass
class Record(recording.Record):
    """A request's record, and how its code ended (:func:`ending`) and what ran after it."""

    EVENTS = (*recording.COMMON_EVENTS, "background")

    #: ``completed``, or the name of the exception that ended the block.
    ended: str | None = None
    #: Items a stream produced.
    items: int = 0
    #: What escaped to a middleware that notes it (``type: message``).
    escaped: list[str] = field(default_factory=list)


def token_dependency(plugin: bool) -> Callable[[Request], Awaitable[CancellationToken]]:
    """The dependency that gives the request's token, or ``CancellationToken.NONE`` without the
    plugin. Async: a ``def`` dependency would take a worker thread."""

    async def token(request: Request) -> CancellationToken:
        return await request_aborted(request) if plugin else CancellationToken.NONE

    return token


@contextmanager
def ending(rec: Record) -> Iterator[None]:
    """Sets ``started`` on entry; on exit notes how the block ended in ``ended``, then sets
    ``finished``. On the event loop only (see :func:`ending_in_thread`)."""
    rec.events["started"].set()
    try:
        yield
        rec.ended = COMPLETED
    except BaseException as exc:
        rec.ended = type(exc).__name__
        raise
    finally:
        rec.events["finished"].set()


@contextmanager
def ending_in_thread(rec: Record) -> Iterator[None]:
    """:func:`ending` for code in a worker thread: the record is changed on the event loop."""
    anyio.from_thread.run_sync(rec.events["started"].set)
    try:
        yield
        ended = COMPLETED
    except BaseException as exc:
        ended = type(exc).__name__
        raise
    finally:
        recording.on_loop(_finish, rec, ended)  # on the loop, if Starlette stopped the generator


def _finish(rec: Record, ended: str) -> None:
    rec.ended = ended
    rec.events["finished"].set()


def note(rec: Record, **values: Any) -> None:
    """Set fields of ``rec`` (from a worker thread: ``anyio.from_thread.run_sync(note, ...)``)."""
    for name, value in values.items():
        setattr(rec, name, value)
