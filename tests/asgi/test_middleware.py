"""The middleware's own edges, in process with a scripted server (both backends): scopes it
leaves alone, a second instance inside the first, and what a finished request leaves behind.

The behaviour users see is tested against real servers (tests/servers/test_leaving.py); the
inbox, the request's state and its endings have files of their own here.
"""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import (
    RequestAbortedMiddleware,
)
from fastapi_abort._state import SCOPE_KEY
from tests.scripted import ScriptedServer, http_scope
from tests.support import respond, token_of, watched

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("scope_type", ["lifespan", "webtransport"])
async def test_scopes_other_than_http_and_websocket_pass_through_untouched(
    scope_type: str,
) -> None:
    seen: list[tuple[Receive, Send, bool]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((receive, send, SCOPE_KEY in scope))

    async def receive() -> Message:
        raise AssertionError("would hang")

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    await RequestAbortedMiddleware(app)({"type": scope_type}, receive, send)
    assert seen == [(receive, send, False)]


async def test_an_inner_second_middleware_defers_to_the_outer_one() -> None:
    states: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        states.append(scope[SCOPE_KEY])
        await respond(send)

    server = ScriptedServer()
    outer = RequestAbortedMiddleware(RequestAbortedMiddleware(app))
    with anyio.fail_after(5):
        await outer(http_scope(), server.receive, server.send)
    assert len(states) == 1
    assert server.status() == 200


# asyncio only: on trio the watcher starts at once, there is no timer to cancel.


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the collector's count, one loop
@pytest.mark.parametrize("reads", [False, True])
async def test_a_finished_request_leaves_no_reference_cycle(
    anyio_backend: str, reads: bool
) -> None:
    # A cycle would leave every request to the cyclic garbage collector: the state and its
    # inbox refer to each other until the request ends.
    import gc

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token_of(scope)
        if reads:
            await receive()
        await respond(send)

    async def one() -> None:
        server = ScriptedServer()
        server.push_body(b"")
        await watched(app)(http_scope(), server.receive, server.send)
        del server

    await one()  # warm-up: the first request makes objects that live on
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            await one()
        await wait_all_tasks_blocked()  # the cancelled readers finish
        assert gc.collect() == 0
    finally:
        gc.enable()
