"""The server's ``receive``, shared by the app and the watcher.

A disconnect is heard only by somebody waiting in ``receive()``. Most requests never ask for their
token, and for them nothing reads on their behalf: the app calls the server's ``receive`` itself,
as it would without this middleware (unless it calls from a scope already cancelled: below), and
only a disconnect it reads is noted. The first request for the token starts the *reader*: one
task that reads the server's ``receive`` whenever the app is not waiting for a message itself,
holding at most one message for the app (``_readahead`` says how far it may read ahead). From
then on only the reader calls the server's ``receive``, the app's reads included, for two
reasons:

- Some servers (hypercorn, daphne) hand each message to exactly one caller of ``receive()``: the
  app must get each body message exactly once, and the disconnect on every call after it.
- A call of the server's ``receive()`` is never cancelled before it completes. granian answers
  such a call with ``http.disconnect`` for a client that is still there, and the app cancels its
  own calls often: Starlette's ``request.is_disconnected()`` is a ``receive()`` in a cancelled
  scope. When the app's call is cancelled, the reader's goes on, and its message is held for the
  app's next call; no token trips falsely. (A request without a token has none to trip; what
  granian then tells its app is what it tells it without this middleware.)

The reader lives until the app returns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from ._backend import Cancellable, spawn
from ._readahead import expects_continue, may_read

if TYPE_CHECKING:
    from starlette.types import Message, Receive

    from ._state import RequestState

logger = logging.getLogger("fastapi_abort")

#: The name of the reader tasks.
READER_NAME = "fastapi_abort request reader"
#: How many turns of the event loop the app gets to act on a disconnect it waited for, before
#: the token's waiters wake (see Inbox._departed).
_TURNS_FOR_THE_APP = 8
#: Logged at DEBUG when the server's receive raised (the app's next receive() raises it too).
READER_FAILED = "The request reader stopped: the server's receive() raised"


class Inbox:
    """The messages of one request's server ``receive``, for the app and for the watcher."""

    __slots__ = (
        "_for_app",
        "_for_reader",
        "_reader",
        "_server_receive",
        "_wake",
        "app_has_read",
        "app_reading",
        "failed",
        "gone",
        "held",
        "hold_for_continue",
        "state",
        "wanted",
        "watching",
    )

    def __init__(self, state: RequestState, receive: Receive) -> None:
        self.state = state
        self._server_receive = receive
        #: A message read from the server that the app has not taken yet: at most one.
        self.held: Message | None = None
        #: The server's disconnect message, once read. Never reset: every later receive() of
        #: the app returns a copy of it.
        self.gone: Message | None = None
        #: What the server's receive raised. Never reset: every later receive() raises it.
        self.failed: Exception | None = None
        #: The app waits for a message: the reader reads one, even when it would not read ahead.
        self.wanted = False
        #: The token exists and the response is incomplete: the reader reads ahead, one message
        #: at most, to hear a disconnect.
        self.watching = False
        #: The app called receive() at least once.
        self.app_has_read = False
        #: The request expects "100 Continue", and neither read nor responded yet (see watch()).
        self.hold_for_continue = False
        #: The app itself waits in the server's receive (a request without a token).
        self.app_reading = False
        #: The reader task, once started; None again once the app returned.
        self._reader: Cancellable | None = None
        #: What wakes the token's waiters, while that waits for the app (_departed()).
        self._wake: Callable[[], None] | None = None
        #: Set, and dropped, when a message (or the disconnect, or a failure) arrived for the
        #: app; and when the reader may read (the app wants a message, or took the held one,
        #: or the response started). Made only while somebody waits.
        self._for_app: anyio.Event | None = None
        self._for_reader: anyio.Event | None = None

    # -- the app's side ------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The ``receive`` the app gets: each message once, the disconnect to every caller."""
        if not self.app_has_read:
            self.app_has_read = True
            if self.hold_for_continue:
                self.changed()
        while True:
            held = self.held
            if held is not None:
                self.held = None
                if self.watching:
                    self.changed()  # the watcher may read on
                return held
            if self.gone is not None:
                return dict(self.gone)
            if self.failed is not None:
                raise self.failed
            if (
                self.state.issued is None
                and self._reader is None
                and anyio.current_effective_deadline() != -math.inf
            ):
                return await self._read_for_app()
            if not self.wanted:
                self.wanted = True
                self._start_or_wake()
            event = self._for_app
            if event is None:
                event = self._for_app = anyio.Event()
            await event.wait()

    # -- the watcher ---------------------------------------------------------------------------

    def watch(self) -> None:
        """Read ahead from now on, to hear a disconnect (once the watcher's delay passed:
        ``RequestState.watch_after()``)."""
        # (Only while the response is incomplete: a request whose response completed or whose
        # app returned left the delay's batch then, and token() does not ask after that.)
        state = self.state
        if not (self.app_has_read or state.response_started):
            # Reading before the app does would make the server answer "100 Continue" on the
            # app's behalf: wait until the app reads or responds (see _readahead).
            self.hold_for_continue = expects_continue(state.scope)
        self.watching = True
        self._start_or_wake()

    def stop_watching(self) -> None:
        """The response is complete: no more reading ahead."""
        self.watching = False
        if not self.wanted:
            self._stop_reader()
        # else: the app waits in receive(), and the reader's call goes on for it.

    async def answer_after(self, last_send: Awaitable[None]) -> None:
        """Await the server's send of the response's last message, then answer the app's
        ``receive()`` calls that wait with ``http.disconnect``, as the server would: the
        response is complete (see ``_channels._last_send``). A disconnect already heard stays."""
        await last_send
        if self.gone is None:
            self.gone = {"type": "http.disconnect"}
            self._arrived()

    def close(self) -> None:
        """The app returned: the reader stops, its call of the server's receive with it."""
        self._woken()
        self.stop_watching()
        self._stop_reader()

    # -- the reader ----------------------------------------------------------------------------

    def changed(self) -> None:
        """Wake the reader if it waits: what it may read has changed."""
        event = self._for_reader
        if event is not None:
            self._for_reader = None
            event.set()

    def _arrived(self) -> None:
        # Wake the app's receive() calls that wait.
        event = self._for_app
        if event is not None:
            self._for_app = None
            event.set()

    def _start_or_wake(self) -> None:
        if self._reader is None:
            self._reader = spawn(self._read, READER_NAME)
        else:
            self.changed()

    def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()

    async def _read_for_app(self) -> Message:
        # A request that has not asked for its token reads the server's receive itself, as it
        # would without this middleware, unless it calls from a scope already cancelled
        # (Starlette's is_disconnected() does): that call, which the cancellation would cut
        # short, goes through the reader, so that granian's false disconnect after it never
        # reads as a departure.
        # (A token asked for meanwhile waits for this call: one caller at a time.)
        self.app_reading = True
        try:
            message = await self._server_receive()
        finally:
            self.app_reading = False
            self.changed()
        disconnect = "websocket.disconnect" if self.state.websocket else "http.disconnect"
        if message["type"] == disconnect:
            self.gone = message
            if self.state.disconnected():
                wake = self.state.trip()
                if wake is not None:  # a token asked for while this call waited
                    wake()
        return message

    async def _read(self) -> None:
        disconnect = "websocket.disconnect" if self.state.websocket else "http.disconnect"
        try:
            while self.gone is None:
                if not may_read(self):
                    event = self._for_reader
                    if event is None:
                        event = self._for_reader = anyio.Event()
                    await event.wait()
                    continue
                message = await self._server_receive()
                if message["type"] == disconnect:
                    self.gone = message
                    if self.state.disconnected():
                        await self._departed()
                elif self.held is None:
                    self.held = message
                # else: the response has started and the app did not take the last body
                # message: this one is dropped, as Starlette's StreamingResponse drops the body
                # it reads.
                self.wanted = False
                self._arrived()
        except Exception as exc:
            logger.debug(READER_FAILED, exc_info=True)
            self.failed = exc
            self._arrived()

    async def _departed(self) -> None:
        # The token reads as cancelled at once. If the response has started and the app waits
        # for this very message, the app acts on it before the token's waiters wake, as it
        # would without this middleware: Starlette's StreamingResponse (on a server below ASGI
        # spec 2.4) then cancels its stream, whose body waiting on the token gets that
        # cancellation rather than OperationCancelled, and still runs its background task.
        wake = self.state.trip()
        if wake is None:
            return
        if not (self.wanted and self.state.response_started):
            wake()
            return
        self._wake = wake
        self._arrived()
        try:
            # A few turns of the loop: the disconnect may pass through middleware between the
            # app and this inbox (a BaseHTTPMiddleware hands it on through a task of its own)
            # before the response's listener cancels its stream; trio may run the tasks woken
            # together in either order.
            for _ in range(_TURNS_FOR_THE_APP):
                await anyio.lowlevel.checkpoint()
        finally:
            self._woken()

    def _woken(self) -> None:
        # The deferred wake-up of the token's waiters, once: after the app heard the
        # disconnect, or when the app returns, whichever comes first (close()).
        wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    def failed_send(self, exc: OSError) -> None:
        """The server's send raised: on a WebSocket, the same news as its disconnect.

        (Servers of ASGI spec 2.4 raise from ``send()`` once the peer is gone.)
        """
        state = self.state
        state.send_error = exc
        if self.gone is None:
            self.gone = {"type": "websocket.disconnect", "code": 1006}
            if state.disconnected():
                wake = state.trip()
                if wake is not None:
                    wake()
            self._arrived()
