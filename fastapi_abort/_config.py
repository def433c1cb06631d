"""The options of ``install()`` and the middleware: their one list, defaults and checks.

``Options`` is what a caller may pass (``install(app, **options)``); ``Config`` is the checked
result, with the defaults. Both list the same seven names: a test keeps them in step.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from ._checks import is_count, is_seconds

if TYPE_CHECKING:
    from ._endings import AbortedRequest

BAD_STATUS = "status_code must be an int from 100 to 999 (499 by default), got {value!r}"
BAD_LEVEL = (
    "log_level must be a logging level: an int such as logging.INFO or a name such as 'INFO', "
    "got {value!r}"
)
BAD_MESSAGE = "message must be a str such as 'Client Closed Request', got {value!r}"
BAD_DELAY = "watcher_delay must be a number of seconds >= 0 (0.001 by default), got {value!r}"
BAD_DEADLINE = (
    "deadline must be a number of seconds > 0, or None for no deadline (the default), got {value!r}"
)
BAD_BUDGET = (
    "max_budget must be a number of seconds > 0: the most that a caller's x-request-budget-ms "
    "header may give a request; or None to ignore the header (the default), got {value!r}"
)
BAD_HOOK = "on_abort must be a callable taking one AbortedRequest, or None, got {value!r}"
UNKNOWN_OPTION = "{what} got an unknown option {name!r}; the options are {names}"


class Options(TypedDict, total=False):
    """The keyword options of :func:`install` and :class:`RequestAbortedMiddleware`.

    Each is optional; its default is the one of :class:`Config`.
    """

    #: The status of the response and log line for a request whose client left (499).
    status_code: int
    #: The level of that line: an int or a name such as ``"DEBUG"`` (``logging.INFO``).
    log_level: int | str
    #: The words after the status code in that line (``"Client Closed Request"``).
    message: str
    #: Seconds a request that asked for its token runs before the watcher listens (0.001).
    watcher_delay: float
    #: Seconds after which every HTTP request's token trips with reason DEADLINE (None).
    deadline: float | None
    #: Called once per request that its token ended, with an AbortedRequest (None).
    on_abort: Callable[[AbortedRequest], object] | None
    #: The most seconds a caller's ``x-request-budget-ms`` header may give a request; None
    #: ignores the header (None).
    max_budget: float | None


def check_deadline(deadline: object) -> float | None:
    """A deadline in seconds (``> 0``, finite), or ``None`` for none.

    :raises ValueError: for anything else.
    """
    if deadline is None:
        return None
    if not is_seconds(deadline, zero=False):
        raise ValueError(BAD_DEADLINE.format(value=deadline))
    return float(deadline)


@dataclass(frozen=True)
class Config:
    """The checked options, shared by every request of one middleware (read, never written).

    :raises TypeError: for an option of the wrong type, or an unknown one (:meth:`of`).
    :raises ValueError: for a value out of range.
    """

    status_code: int = 499
    #: Always an int once checked (a name is looked up).
    log_level: int | str = logging.INFO
    message: str = "Client Closed Request"
    watcher_delay: float = 0.001
    deadline: float | None = None
    on_abort: Callable[[AbortedRequest], object] | None = None
    max_budget: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status_code, int) or isinstance(self.status_code, bool):
            raise TypeError(BAD_STATUS.format(value=self.status_code))
        if not 100 <= self.status_code <= 999:
            raise ValueError(BAD_STATUS.format(value=self.status_code))
        level: object = self.log_level
        if isinstance(level, str):
            level = logging.getLevelName(level)  # the number, or "Level X" for an unknown name
        if not is_count(level):
            raise ValueError(BAD_LEVEL.format(value=self.log_level))
        if not isinstance(self.message, str):
            raise TypeError(BAD_MESSAGE.format(value=self.message))
        if not is_seconds(self.watcher_delay):
            raise ValueError(BAD_DELAY.format(value=self.watcher_delay))
        if self.on_abort is not None and not callable(self.on_abort):
            raise TypeError(BAD_HOOK.format(value=self.on_abort))
        if self.max_budget is not None and not is_seconds(self.max_budget, zero=False):
            raise ValueError(BAD_BUDGET.format(value=self.max_budget))
        # Normalised once, here: the request path reads plain ints and floats.
        object.__setattr__(self, "log_level", level)
        object.__setattr__(self, "watcher_delay", float(self.watcher_delay))
        object.__setattr__(self, "deadline", check_deadline(self.deadline))
        if self.max_budget is not None:
            object.__setattr__(self, "max_budget", float(self.max_budget))

    @property
    def level(self) -> int:
        """:attr:`log_level` as the int it always is once checked."""
        level = self.log_level
        assert isinstance(level, int)
        return level

    @classmethod
    def of(cls, what: str, options: Mapping[str, Any]) -> Config:
        """Check ``options`` (as passed to ``what``, for the message) and fill in defaults."""
        for name in options:
            if name not in _NAMES:
                raise TypeError(UNKNOWN_OPTION.format(what=what, name=name, names=_LISTED))
        return cls(**options)


_NAMES = frozenset(field.name for field in dataclasses.fields(Config))
_LISTED = ", ".join(field.name for field in dataclasses.fields(Config))

#: The signals whose server handler ``install(app, stopping=True)`` chains onto: what process
#: managers (SIGTERM) and terminals (SIGINT) send to start a graceful shutdown.
STOPPING_SIGNALS = ("SIGINT", "SIGTERM")
BAD_STOPPING = "stopping must be True or False (False by default), got {value!r}"
NOT_STOPPING = (
    "stop_on_shutdown and stopping_token need install(app, stopping=True), and this {app} was "
    "installed without it (or not at all). Pass stopping=True to install() on the outermost app: "
    "routes of apps mounted inside it find its token."
)
#: Logged at WARNING (the signals) at lifespan startup when no server handler can be chained.
NO_SIGNAL_HOOK = (
    "install(app, stopping=True): this process has no server handler for %s to chain onto "
    "(the server handles its signals in another process or thread, or not at all). The "
    "stopping token trips only at the lifespan shutdown, after the requests have ended. See "
    "docs/shutdown.md for each server."
)
