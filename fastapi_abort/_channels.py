"""The ``receive`` and ``send`` the app gets, one pair per request.

``receive`` is the request's inbox (``_inbox``). ``send`` notes where the response is before
the message goes to the server: the start, and the last message, after which a disconnect no
longer means that the client left. Both are named after the callables they stand for, so that
tools that name spans after the ``receive`` and ``send`` they are given (Sentry's
``middleware_spans``) see the names they see without this middleware.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Send

    from ._state import RequestState


def receive_for(state: RequestState, receive: Receive) -> Receive:
    """The app's ``receive``: the request's inbox, made on the first call."""

    def app_receive() -> Awaitable[Message]:
        return (state.inbox or state.open_inbox()).receive()

    app_receive.__name__ = getattr(receive, "__name__", "app_receive")
    app_receive.__qualname__ = getattr(receive, "__qualname__", "app_receive")
    return app_receive


def send_for(state: RequestState, send: Send) -> Send:
    """The app's ``send``: the server's, once the message is noted on ``state``."""
    if state.websocket:
        app_send = _websocket_send(state, send)
    else:

        def app_send(message: Message) -> Awaitable[None]:
            # Every message of every request passes here: the two that every response has
            # are noted inline, the rest by state.sent_other(). It returns the server's own
            # awaitable: no coroutine of ours between the app and the server.
            kind = message["type"]
            if kind == "http.response.body":
                # What was handed to the server, for the abort record (AbortedRequest).
                # (A body that is not bytes is left for the server to refuse.)
                state.body_messages += 1
                body = message.get("body", b"")
                if body and isinstance(body, (bytes, bytearray)):
                    if not state.body_bytes:
                        state.first_byte_at = time.perf_counter()
                    state.body_bytes += len(body)
                if (
                    state.response_started
                    and not message.get("more_body", False)
                    and not state.trailers
                ):
                    state.completed()
                    return _last_send(state, send, message)
            elif kind == "http.response.start":
                if message.get("trailers", False):
                    state.trailers = True
                state.status_sent = message.get("status")
                state.started()
            else:
                state.sent_other(message)
                if state.response_complete:
                    return _last_send(state, send, message)
            return send(message)

    app_send.__name__ = getattr(send, "__name__", "app_send")
    app_send.__qualname__ = getattr(send, "__qualname__", "app_send")
    return app_send


def _last_send(state: RequestState, send: Send, message: Message) -> Awaitable[None]:
    """The server's send of the response's last message.

    If the app waits in ``receive()`` meanwhile (the disconnect listener of Starlette's
    ``StreamingResponse``), its call gets ``http.disconnect`` as soon as that send returns: every
    server answers so after a complete response, and the listener then returns before its task
    group cancels it, as without this middleware (whose reader would bring the server's answer
    a turn of the loop too late). An app that does not wait, waits for the server itself.
    """
    inbox = state.inbox
    if inbox is None or not inbox.wanted:
        return send(message)
    return inbox.answer_after(send(message))


def _websocket_send(state: RequestState, send: Send) -> Send:
    async def app_send(message: Message) -> None:
        state.sent_other(message)
        try:
            await send(message)
        except OSError as exc:
            # Servers of ASGI spec 2.4 raise from send() once the peer is gone: the same news
            # as its disconnect message.
            state.open_inbox().failed_send(exc)
            raise

    return app_send
