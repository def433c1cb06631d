"""The ``receive`` and ``send`` the app gets, one pair per request.

``receive`` is the request's inbox (``_inbox``). ``send`` notes where the response is before
the message goes to the server: the start, and the last message, after which a disconnect no
longer means that the client left. Both are named after the callables they stand for, so that
tools that name spans after the ``receive`` and ``send`` they are given (Sentry's
``middleware_spans``) see the names they see without this middleware.
"""

from __future__ import annotations

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
                if (
                    state.response_started
                    and not message.get("more_body", False)
                    and not state.trailers
                ):
                    state.completed()
            elif kind == "http.response.start":
                if message.get("trailers", False):
                    state.trailers = True
                state.started()
            else:
                state.sent_other(message)
            return send(message)

    app_send.__name__ = getattr(send, "__name__", "app_send")
    app_send.__qualname__ = getattr(send, "__qualname__", "app_send")
    return app_send


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
