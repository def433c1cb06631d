"""Hostile and malformed input, in process: the middleware never hangs and keeps its promises.

On both backends, with the scripted server of ``tests.scripted``:

* fuzzed ASGI message sequences (hypothesis): random request bodies (sizes, ``more_body``
  flags), disconnects at random points, and random app behaviour (read, ask for the token,
  respond, raise); a message of a type the middleware does not know is held like a body part;
* an app that breaks the protocol: ``receive`` after the response, ``send`` after the
  disconnect, a second ``http.response.start``, a body before the start.

(That lifespan scopes pass through untouched is tested in tests/asgi/test_middleware.py.) The
same input against real servers: tests/servers/test_hostile.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from fastapi_abort import CancellationToken
from fastapi_abort._state import SCOPE_KEY, RequestState
from tests.scripted import ScriptedServer, http_scope
from tests.support import CI, WAIT, watched

QUIET = "Client Closed Request"

# -- fuzzed ASGI message sequences -----------------------------------------------------------------


class AppError(Exception):
    """The app's own exception: the only one allowed out of the middleware."""


@dataclass(frozen=True)
class Script:
    """What the server delivers and what the app does, and in which order the two interleave."""

    #: The server's messages, in order: body chunks, unknown types, perhaps a disconnect.
    messages: tuple[Message, ...]
    #: The app's actions, in order.
    actions: tuple[str, ...]
    #: The merged timeline: True takes the next server message, False the next app action.
    order: tuple[bool, ...]


APP_ACTIONS = ("token", "read", "read", "start", "body", "final", "raise", "wait")


@st.composite
def scripts(draw: st.DrawFn, unknown: bool = False) -> Script:
    """Bodies of 0 to 4 chunks (the last with ``more_body`` false, or now and then random flags),
    unknown message types if ``unknown``, perhaps a disconnect anywhere, up to 8 app actions."""
    chunks = draw(st.integers(0, 4))
    messages: list[Message] = []
    for n in range(chunks):
        if unknown and draw(st.booleans()):
            messages.append({"type": "http.unknown", "n": n})
        size = draw(st.sampled_from([0, 1, 100, 70_000]))
        more = n < chunks - 1 if draw(st.integers(0, 9)) else draw(st.booleans())
        messages.append(
            {"type": "http.request", "body": bytes([n % 256]) * size, "more_body": more}
        )
    if draw(st.booleans()):
        messages.insert(draw(st.integers(0, len(messages))), {"type": "http.disconnect"})
    actions = tuple(draw(st.lists(st.sampled_from(APP_ACTIONS), max_size=8)))
    order = draw(st.permutations([True] * len(messages) + [False] * len(actions)))
    return Script(tuple(messages), actions, tuple(order))


@dataclass
class Trace:
    """What happened, for the checks."""

    received: list[Message] = field(default_factory=list)
    #: The server's receive() results and the app's sends, in order: ("recv", type) and
    #: ("send", type, more_body).
    events: list[tuple[Any, ...]] = field(default_factory=list)
    #: Every message the server queued, in order: the script's, and the disconnect it reports
    #: once the response is complete.
    pushed: list[Message] = field(default_factory=list)
    token: CancellationToken | None = None
    app_returned: bool = False
    started_at_read: list[bool] = field(default_factory=list)


class TracingServer(ScriptedServer):
    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self.trace = trace

    def push(self, message: Message) -> None:
        self.trace.pushed.append(message)
        super().push(message)

    async def receive(self) -> Message:
        message = await super().receive()
        self.trace.events.append(("recv", message["type"]))
        return message

    async def send(self, message: Message) -> None:
        more = bool(message.get("more_body", False))
        self.trace.events.append(("send", message["type"], more))
        await super().send(message)


def scripted_app(trace: Trace, actions: anyio.abc.ObjectReceiveStream[str]) -> Any:
    """An app that does what ``actions`` say, one at a time, as the test hands them over."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with actions:
                await follow(scope[SCOPE_KEY], receive, send)
        finally:
            trace.app_returned = True

    async def follow(state: RequestState, receive: Receive, send: Send) -> None:
        started = False
        async for action in actions:
            if action == "token":
                trace.token = state.token()
            elif action == "read":
                message = await receive()
                trace.received.append(message)
                trace.started_at_read.append(started)
            elif action == "start":
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": []})
            elif action in ("body", "final"):
                if not started:  # a body before the start is refused: see its own test
                    started = True
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                await send(
                    {"type": "http.response.body", "body": b"x", "more_body": action == "body"}
                )
            elif action == "raise":
                raise AppError("the app's own")
            elif action == "wait" and trace.token is not None:
                with anyio.move_on_after(0):  # a checkpoint: what the app may await
                    await trace.token.wait()

    return app


def body_messages(messages: list[Message] | tuple[Message, ...]) -> list[Message]:
    return [m for m in messages if m["type"] != "http.disconnect"]


async def run_script(script: Script, caplog: pytest.LogCaptureFixture) -> None:
    trace = Trace()
    server = TracingServer(trace)
    send_action, receive_action = anyio.create_memory_object_stream[str](math.inf)
    middleware = watched(scripted_app(trace, receive_action))
    raised: list[BaseException] = []

    async def serve() -> None:
        try:
            await middleware(http_scope(method="POST"), server.receive, server.send)
        except Exception as exc:
            raised.append(exc)

    messages, actions = list(script.messages), list(script.actions)
    pushed_disconnect = False
    caplog.clear()
    with anyio.fail_after(WAIT), send_action:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            for take_message in script.order:
                if take_message:
                    message = messages.pop(0)
                    pushed_disconnect |= message["type"] == "http.disconnect"
                    server.push(message)
                else:
                    action = actions.pop(0)
                    # BrokenResourceError: the app has returned or raised; it takes no more.
                    with contextlib.suppress(anyio.BrokenResourceError):
                        send_action.send_nowait(action)
                await wait_all_tasks_blocked()
            live = no_unread_body_before_the_disconnect(trace, script)
            if trace.token is not None and pushed_disconnect and live and not trace.app_returned:
                # Nothing holds the disconnect back: the watcher has read it, unless the
                # response was complete first.
                complete = any(
                    e[0] == "send" and not e[2]
                    for e in trace.events
                    if e[1:2] == ("http.response.body",)
                )
                assert trace.token.is_cancellation_requested or complete, trace.events
            if not pushed_disconnect:
                server.disconnect()  # the client leaves at the end: lets a reading app return
            send_action.close()
    check_trace(script, trace, raised, caplog)


def no_unread_body_before_the_disconnect(trace: Trace, script: Script) -> bool:
    position = next(
        (i for i, m in enumerate(script.messages) if m["type"] == "http.disconnect"), None
    )
    if position is None:
        return False
    before = body_messages(script.messages[:position])
    started = any(e[:2] == ("send", "http.response.start") for e in trace.events)
    return started or len(body_messages(trace.received)) >= len(before)


def check_trace(
    script: Script, trace: Trace, raised: list[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing but the app's own exception comes out.
    assert all(isinstance(exc, AppError) for exc in raised), raised
    # Each body message reaches the app at most once and in order: what the app received is a
    # subsequence of what the server sent...
    sent_by_server = body_messages(script.messages)
    got = body_messages(trace.received)
    position = 0
    for message in got:
        while position < len(sent_by_server) and sent_by_server[position] is not message:
            position += 1
        assert position < len(sent_by_server), ("out of order or twice", got, sent_by_server)
        position += 1
    # ... and with no gap while the response had not started (after it, the middleware
    # discards what the app did not take: see the module docstring of _middleware). An app that
    # heard the disconnect before it started its response had every body message before it.
    # Only up to the first final one: a server that sends more after it breaks the protocol.
    expected: list[Message] = []
    for message in trace.pushed:
        if message["type"] == "http.disconnect":
            break
        expected.append(message)
        if message["type"] == "http.request" and not message.get("more_body", False):
            break
    before_start: list[Message] = []
    for message, started in zip(trace.received, trace.started_at_read, strict=True):
        if started:
            break
        if message["type"] == "http.disconnect":
            assert before_start[: len(expected)] == expected, (before_start, expected)
            break
        before_start.append(message)
    assert before_start[: len(expected)] == expected[: len(before_start)], (before_start, expected)
    # The token trips iff the middleware read the disconnect before the final body was sent.
    kinds = trace.events
    disconnect_at = next((i for i, e in enumerate(kinds) if e == ("recv", "http.disconnect")), None)
    final_at = next(
        (i for i, e in enumerate(kinds) if e[:2] == ("send", "http.response.body") and not e[2]),
        None,
    )
    aborted = disconnect_at is not None and (final_at is None or disconnect_at < final_at)
    if trace.token is not None:
        assert trace.token.is_cancellation_requested == aborted, kinds
        assert not trace.token.can_be_cancelled or trace.token.is_cancellation_requested
    quiet = [r for r in caplog.records if QUIET in r.getMessage()]
    # One quiet line for a request whose client left, unless the app raised: its error then goes
    # to the server, which logs it.
    assert len(quiet) == int(aborted and not raised), (kinds, [r.getMessage() for r in quiet])
    assert all(r.levelno <= logging.INFO for r in caplog.records), caplog.text


# About 0.3 s an example on asyncio, where wait_all_tasks_blocked() polls every 0.1 s.
FUZZ = settings(
    max_examples=100 if CI else 40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.anyio
@pytest.mark.timeout(150)
@FUZZ
@given(script=scripts())
async def test_fuzzed_message_sequences_keep_the_middleware_promises(
    script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await run_script(script, caplog)


@pytest.mark.anyio
async def test_a_message_of_unknown_type_does_not_cost_the_app_its_body() -> None:
    server = ScriptedServer()
    may_read = anyio.Event()
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope[SCOPE_KEY].token()  # the watcher starts and reads ahead of the app
        await may_read.wait()
        with anyio.move_on_after(1):  # the body is queued: a longer wait only means it is lost
            for _ in range(3):
                received.append(await receive())

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watched(app), http_scope(method="POST"), server.receive, server.send)
            for message in (
                {"type": "http.unknown"},
                {"type": "http.request", "body": b"a", "more_body": True},
                {"type": "http.request", "body": b"b", "more_body": False},
            ):
                server.push(message)
                await wait_all_tasks_blocked()
            may_read.set()
    assert [m.get("body") for m in received] == [None, b"a", b"b"]


# -- protocol misuse, in process ----------------------------------------------------------------


@pytest.mark.anyio
async def test_receive_after_the_response_gets_the_server_disconnect_and_never_trips() -> None:
    server = ScriptedServer()
    seen: list[str] = []
    tokens: list[CancellationToken] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        tokens.append(scope[SCOPE_KEY].token())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})
        seen.append((await receive())["type"])
        seen.append((await receive())["type"])

    server.push_body(b"")
    with anyio.fail_after(WAIT):
        await watched(app)(http_scope(), server.receive, server.send)
    assert seen == ["http.request", "http.disconnect"]
    assert not tokens[0].is_cancellation_requested
    assert not tokens[0].can_be_cancelled


@pytest.mark.anyio
async def test_send_after_the_disconnect_reaches_the_server_and_logs_one_quiet_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = ScriptedServer()
    caplog.set_level(logging.INFO)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await scope[SCOPE_KEY].token().wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    server.disconnect()
    with anyio.fail_after(WAIT):
        await watched(app)(http_scope("/late"), server.receive, server.send)
    # Servers drop what is sent after the disconnect (ASGI below 2.4); the middleware passes it
    # on, and the request still counts as one whose client left.
    assert server.body() == b"late"
    (line,) = [r.getMessage() for r in caplog.records if QUIET in r.getMessage()]
    assert line.startswith("GET /late: 499 Client Closed Request after ")


@pytest.mark.anyio
async def test_a_second_response_start_is_passed_to_the_server_which_says_what_is_wrong() -> None:
    problem = "Unexpected ASGI message 'http.response.start' sent, after response already started."

    class Strict(ScriptedServer):
        async def send(self, message: Message) -> None:
            if message["type"] == "http.response.start" and self.status() is not None:
                raise RuntimeError(problem)
            await super().send(message)

    server = Strict()
    errors: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.start", "status": 500, "headers": []})
        except RuntimeError as exc:
            errors.append(str(exc))
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    with anyio.fail_after(WAIT):
        await watched(app)(http_scope(), server.receive, server.send)
    assert errors == [problem]  # the server's own words, not hidden by the middleware
    assert server.status() == 200


@pytest.mark.anyio
async def test_a_body_before_the_response_start_is_left_to_the_server_to_refuse() -> None:
    # As without the middleware: the server's own error (uvicorn: "Expected ASGI message
    # 'http.response.start', ..."), not one of ours; the token is not disturbed.
    server = ScriptedServer()
    tokens: list[CancellationToken] = []
    early: Message = {"type": "http.response.body", "body": b"early", "more_body": False}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        tokens.append(scope[SCOPE_KEY].token())
        await send(early)

    with anyio.fail_after(WAIT):
        await watched(app)(http_scope(), server.receive, server.send)
    assert server.sent == [early]
    assert not tokens[0].is_cancellation_requested
