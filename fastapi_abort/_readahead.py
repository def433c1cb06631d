"""How far the reader may read ahead of the app: the bound on what one request holds.

The reader (``_inbox``) reads the server's ``receive`` to hear a disconnect while the app does
not read. What it reads before the app asks is held for the app, so reading ahead is bounded: at
most one message held, and never past a body message the app has not taken while the response
has not started (that is the upload the app has yet to read: holding more would buffer the body
without bound). Nor may it read before the app for a request that expects ``100 Continue``: the
server answers "100 Continue" on the first read, and that is the app's to decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Scope

    from ._inbox import Inbox


def expects_continue(scope: Scope) -> bool:
    """The request's headers ask for ``100 Continue`` (``Expect: 100-continue``)."""
    return any(
        name == b"expect" and value.lower() == b"100-continue"
        for name, value in scope.get("headers", ())
    )


def may_read(inbox: Inbox) -> bool:
    """The reader may call the server's ``receive`` now.

    Never while the app itself waits in it (one caller at a time); always when the app waits for
    a message and none is held; otherwise only while watching, and then within the bound above.
    """
    if inbox.app_reading:
        return False
    held = inbox.held
    if held is None and inbox.wanted:
        return True
    if not inbox.watching:
        return False
    state = inbox.state
    if state.websocket:
        # One message ahead is the bound: read on only once the app took it.
        return held is None
    if (
        held is not None
        and not state.response_started
        and (held.get("more_body", False) or held["type"] != "http.request")
    ):
        # The same bound; only the last body message lets the reader go on, for the
        # disconnect that may follow (after a message of a type it does not know, more
        # body may come).
        return False
    return not (inbox.hold_for_continue and not (inbox.app_has_read or state.response_started))
