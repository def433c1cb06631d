"""When a request's token becomes final: with the last message of the response, whichever way
the app ends it (scripted server, both backends)."""

from __future__ import annotations

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import (
    CancellationReason,
    CancellationToken,
    RequestAbortedMiddleware,
)
from fastapi_abort._state import SCOPE_KEY, RequestState
from tests.scripted import ScriptedServer, http_scope
from tests.support import quiet_lines, respond, token_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "ending",
    [
        [{"type": "http.response.pathsend", "path": "/etc/hostname"}],
        [{"type": "http.response.zerocopysend", "file": 0, "more_body": False}],
        [
            {"type": "http.response.zerocopysend", "file": 0, "more_body": True},
            {"type": "http.response.body", "body": b"", "more_body": False},
        ],
        [
            {"type": "http.response.body", "body": b"x", "more_body": False},
            {"type": "http.response.trailers", "headers": [], "more_trailers": True},
            {"type": "http.response.trailers", "headers": [], "more_trailers": False},
        ],
    ],
    ids=["pathsend", "zerocopysend", "zerocopysend-then-body", "trailers-in-two"],
)
async def test_every_way_to_end_a_response_makes_the_token_final(ending: list[Message]) -> None:
    finals: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        state: RequestState = scope[SCOPE_KEY]
        token = state.token()
        trailers = ending[-1]["type"] == "http.response.trailers"
        start: Message = {"type": "http.response.start", "status": 200, "headers": []}
        await send({**start, "trailers": True} if trailers else start)
        for message in ending:
            finals.append(token.can_be_cancelled)
            await send(message)
        finals.append(token.can_be_cancelled)

    server = ScriptedServer()
    await RequestAbortedMiddleware(app, watcher_delay=0)(http_scope(), server.receive, server.send)
    # Cancellable until the last message of the response, final from then on.
    assert finals == [True] * len(ending) + [False]


async def test_a_token_first_asked_for_after_the_response_is_final_at_once() -> None:
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        state: RequestState = scope[SCOPE_KEY]
        tokens.append(state.token())  # a background task, say

    server = ScriptedServer()
    await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert tokens[0].can_be_cancelled is False


async def test_disconnect_reported_for_a_completed_response_never_trips(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        tokens.append(token_of(scope))
        await respond(send)
        # The server now reports http.disconnect, as all of them do after a response.
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"

    server = ScriptedServer()
    server.push_body(b"")
    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert not tokens[0].is_cancellation_requested
    assert not tokens[0].can_be_cancelled
    assert quiet_lines(caplog) == []


async def test_token_asked_for_after_the_app_heard_the_disconnect_is_born_cancelled() -> None:
    server = ScriptedServer()
    server.disconnect()
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.disconnect"
        tokens.append(token_of(scope))

    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert tokens[0].reason is CancellationReason.CLIENT_DISCONNECTED


async def test_token_asked_for_after_the_response_completed_is_final() -> None:
    server = ScriptedServer()
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send)
        tokens.append(token_of(scope))

    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert not tokens[0].can_be_cancelled
    assert server.receive_calls == 0  # no watcher was started for a finished response


async def test_response_with_trailers_completes_only_after_the_last_trailers() -> None:
    server = ScriptedServer()
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        tokens.append(token)
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})
        assert token.can_be_cancelled  # the trailers are still to come
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})

    with anyio.fail_after(5):
        await RequestAbortedMiddleware(app)(http_scope(), server.receive, server.send)
    assert not tokens[0].can_be_cancelled
    assert not tokens[0].is_cancellation_requested
