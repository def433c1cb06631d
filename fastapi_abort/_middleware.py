"""The ASGI middleware that trips a request's token when its client goes away.

One request, in order: the middleware makes the request's state (``_state``), hands the app a
``receive`` that shares the server's with the watcher (``_inbox``) and a ``send`` that notes where
the response is; when the app ends, ``_endings`` says whether that was the request's own
cancellation, answers it (the 499, the 504) and logs it. docs/how-it-works.md walks the same path.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import anyio

from ._channels import receive_for, send_for
from ._config import Config, Options
from ._endings import answer, log_ending, needs_logging, why_ended
from ._reason import CancellationReason
from ._state import SCOPE_KEY, RequestState

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send


class RequestAbortedMiddleware:
    """Pure ASGI middleware that cancels a request's token when the client disconnects.

    ``fastapi_abort.install(app)`` adds it where it must be: outside every other middleware but
    Starlette's outermost ``ServerErrorMiddleware`` (which never reads ``receive``), so that no
    other middleware reads the server's ``receive`` or hides ``send`` from it. ``http`` and
    ``websocket`` scopes are handled; ``lifespan`` scopes pass through untouched, and so does a
    request already handled by an outer instance of this middleware.

    It takes the options of :func:`install` but ``preemptive`` (see :class:`Options`): the
    status, level and words of the quiet line, the watcher's delay, the app-wide deadline and the
    ``on_abort`` hook. The hook runs on the event loop, once per request that its token ended
    (the client left, or the deadline passed), after the app has finished, with an
    :class:`AbortedRequest`: keep it quick (count, record); what it raises is logged and ignored.

    :raises TypeError: at once, for an option of the wrong type, or an unknown one.
    :raises ValueError: at once, for a value out of range.
    """

    def __init__(self, app: ASGIApp, **options: Unpack[Options]) -> None:
        self.app = app
        self.config = Config.of("RequestAbortedMiddleware()", options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or SCOPE_KEY in scope:
            # A lifespan scope; or an outer instance of this middleware handles the request.
            await self.app(scope, receive, send)
            return
        state = RequestState(scope, self.config, receive, websocket=kind == "websocket")
        # The scope holds the state until the app returns (the cycle is broken below).
        scope[SCOPE_KEY] = state
        app_receive = receive_for(state, receive)
        app_send = send_for(state, send)
        try:
            await self.app(scope, app_receive, app_send)
        except Exception as exc:
            reason = why_ended(state, exc)
            if reason is None or (
                reason is not CancellationReason.CLIENT_DISCONNECTED and state.response_started
            ):
                # Not this request's own ending; or a deadline or the shutdown once the
                # response started, which cannot become a 504 or a 503: the response is cut
                # short, and the server must see an error so that the client does too.
                raise
            if not state.response_started:
                # (Servers of ASGI spec 2.4 may raise OSError on a closed connection.)
                with contextlib.suppress(OSError):
                    await answer(state, reason)(scope, app_receive, app_send)
            # else: the client left mid-response; the response ends here, cut short.
        except BaseException as exc:
            # The server cancelled the request (at shutdown, once its graceful timeout ran out):
            # work bound to the token (callbacks, linked tokens) stops too. Always re-raised.
            if state.issued is not None and isinstance(exc, anyio.get_cancelled_exc_class()):
                state.issued._cancel(CancellationReason.SHUTDOWN, None)
            raise
        finally:
            state.finish()
            # The state holds the server's receive, which holds the server's request object,
            # which holds the scope: without this, every request would be left to the cyclic
            # garbage collector (docs/benchmarks.md).
            scope.pop(SCOPE_KEY, None)
        if needs_logging(state):
            log_ending(state)
